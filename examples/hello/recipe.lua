-- A small tool image on top of the busybox base (recipes/busybox.lua).
--
--   imgbuild build examples/hello/recipe.lua -t localhost/hello:latest
--   podman run --rm localhost/hello:latest            # after loading it into podman

local version = arg("VERSION", "1.0")

from "localhost/busybox:latest"
copy { "hello.sh", "/usr/local/bin/hello", mode = "0755" }
copy { "motd.txt", "/usr/share/hello/" }
run "hello --self-test > /usr/share/hello/self-test.txt"
env { GREETING = "hello", HELLO_VERSION = version }
workdir "/home/app"
user "app"
label { ["org.opencontainers.image.version"] = version }
entrypoint { "/usr/local/bin/hello" }
cmd { "world" }
