#!/bin/sh
# hello: greets its arguments; prints where and as whom it runs.
if [ "$1" = "--self-test" ]; then
	echo "self-test ok"
	exit 0
fi
echo "${GREETING:-hi}, ${*:-world}! (hello ${HELLO_VERSION:-?}, uid $(id -u), in $(pwd))"
cat /usr/share/hello/motd.txt
