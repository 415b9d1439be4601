-- A minimal busybox base image, built offline from Debian's busybox-static.
--
--   imgbuild build recipes/busybox.lua --context /bin -t localhost/busybox:latest
--
-- The build context is the directory holding the static busybox binary
-- (/bin on Debian with busybox-static installed); nothing else is read from it.

stage("busybox", "scratch")
copy { "busybox", "/bin/busybox", mode = "0755" }
run { "/bin/busybox", "sh", "-c", [[
set -e
/bin/busybox mkdir -p /usr/bin /usr/sbin /sbin /etc /root /tmp /home /var/tmp /var/www
/bin/busybox --install -s
/bin/busybox chmod 1777 /tmp /var/tmp
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n' > /etc/passwd
printf 'root:x:0:\nnobody:x:65534:\napp:x:1000:\n' > /etc/group
/bin/busybox mkdir -p /home/app && /bin/busybox chown 1000:1000 /home/app
]] }
env { PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" }
label { ["org.opencontainers.image.title"] = "busybox",
        ["org.opencontainers.image.description"] = "busybox-static from Debian" }
cmd { "/bin/sh" }
