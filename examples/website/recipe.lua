-- Multi-stage: a build stage renders a static site, the final image serves
-- it with busybox httpd and carries nothing of the build tooling.
--
--   imgbuild build examples/website/recipe.lua -t localhost/website:latest

local title = arg("TITLE", "imgbuild example site")

local build = stage("build", "localhost/busybox:latest")
copy { "site/", "/src/" }
run { "/bin/sh", "-c", "mkdir -p /out && for f in /src/*.html; do " ..
      "sed \"s/@TITLE@/$TITLE/g\" \"$f\" > /out/$(basename \"$f\"); done && " ..
      "sha256sum /out/*.html > /out/SHA256SUMS",
      env = { TITLE = title } }

stage("final", "localhost/busybox:latest")
copy { from = build, "/out/", "/var/www/" }
expose "8080/tcp"
user "nobody"
healthcheck { test = { "CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/" },
              interval = "30s", retries = 3 }
stopsignal "SIGTERM"
entrypoint { "/bin/httpd", "-f", "-p", "8080", "-h", "/var/www" }
