# A test host of the suite's own: a network namespace with one veth link to
# the host, addresses from the benchmarking range 198.18.0.0/15 (RFC 2544),
# so a test can reach a server on an address that is not loopback without
# sending anything to this machine's own interfaces or to any other host.
#
#   testnet_up          -> TESTNET_NS, TESTNET_IP (inside), TESTNET_HOST_IP
#   testnet_exec CMD    run CMD inside the namespace
#   testnet_down        remove the namespace and the link (idempotent)
#
# testnet_up returns 1 (and says why on stderr) where namespaces or veth
# links cannot be made; the caller skips.

testnet_up() {
	command -v ip >/dev/null || {
		echo "testnet: 'ip' (iproute2) is not installed" >&2
		return 1
	}
	local k=$(($$ % 256)) tries=0
	while ip -4 -o addr show 2>/dev/null | grep -q " 198\.18\.$k\."; do
		k=$(((k + 1) % 256))
		tries=$((tries + 1))
		[ "$tries" -lt 256 ] || return 1
	done
	export TESTNET_NS="ibtest-$$" TESTNET_LINK="ibt$$"
	export TESTNET_HOST_IP="198.18.$k.1" TESTNET_IP="198.18.$k.2"
	{
		ip netns add "$TESTNET_NS" &&
			ip link add "$TESTNET_LINK" type veth peer name "${TESTNET_LINK}p" &&
			ip link set "${TESTNET_LINK}p" netns "$TESTNET_NS" &&
			ip addr add "$TESTNET_HOST_IP/30" dev "$TESTNET_LINK" &&
			ip link set "$TESTNET_LINK" up &&
			ip -n "$TESTNET_NS" addr add "$TESTNET_IP/30" dev "${TESTNET_LINK}p" &&
			ip -n "$TESTNET_NS" link set "${TESTNET_LINK}p" up &&
			ip -n "$TESTNET_NS" link set lo up
	} 2>/dev/null || {
		echo "testnet: cannot create a network namespace with a veth link here" >&2
		testnet_down
		return 1
	}
}

testnet_exec() {
	ip netns exec "$TESTNET_NS" "$@"
}

testnet_down() {
	[ -n "${TESTNET_NS:-}" ] || return 0
	ip netns pids "$TESTNET_NS" 2>/dev/null | xargs -r kill 2>/dev/null || true
	ip netns del "$TESTNET_NS" 2>/dev/null || true
	ip link del "$TESTNET_LINK" 2>/dev/null || true
	return 0
}
