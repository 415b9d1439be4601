# Registry figures for the reference benchmark; sourced by bench/run.sh at its
# end (not run on its own).  Uses what run.sh set up: $IB, $W, $IMGBUILD_ROOT
# (holding localhost/bench:latest), $BUILDAH (whose storage holds the same
# image built by buildah), $BIG (recipe for a 1 GB single-file layer) and the
# now/elapsed/ratio/row/note helpers.  See bench/README.md for what each figure means.
#
# Every push goes to a docker-registry started here, on a free 127.0.0.1 port,
# with filesystem storage under $W.  Each push to an "empty registry" gets a
# registry of its own, so no tool can skip or cross-mount a blob another run
# uploaded.  Each figure is the median of $IB_BENCH_TRIALS runs (default 3),
# imgbuild and the other tool taking turns; the rows go into run.sh's table
# (its row and note helpers).  The registries come from bench/regsrv.sh; they
# are stopped at the end, and on any failure by run.sh's EXIT trap.

if ! command -v docker-registry >/dev/null 2>&1; then
	echo "registry figures skipped: docker-registry is not installed"
	return 0
fi
if ! "$IB" push --help >/dev/null 2>&1; then
	echo "registry figures skipped: this imgbuild has no push command"
	return 0
fi


rb_ib_push=() rb_bh_push=() rb_ib_repush=() rb_bh_repush=() rb_ib_pull=() rb_sk_pull=()
rb_logs=$rb_dir/logs
mkdir -p "$rb_logs"

echo "== registry: docker-registry $(docker-registry --version | awk '{print $3}') on 127.0.0.1," \
	"median of $rb_trials runs; load average:$(uptime | sed 's/.*load average://')"

# push to an empty registry; re-push of what the registry already has
for rb_i in $(seq "$rb_trials"); do
	rb_start ib-$rb_i
	rb_ib_port=$rb_port
	rb_time rb_s "$rb_logs/ib-push" $IB -q push localhost/bench:latest \
		"127.0.0.1:$rb_ib_port/bench/ib:1"
	rb_ib_push+=("$rb_s")
	rb_pushed_digest=$(tail -n 1 "$rb_logs/ib-push.out")
	rb_start bh-$rb_i
	rb_bh_port=$rb_port
	rb_time rb_s "$rb_logs/bh-push" $BUILDAH push -q --tls-verify=false localhost/bench:latest \
		"docker://127.0.0.1:$rb_bh_port/bench/bh:1"
	rb_bh_push+=("$rb_s")
	rb_time rb_s "$rb_logs/ib-repush" $IB -q push localhost/bench:latest \
		"127.0.0.1:$rb_ib_port/bench/ib:1"
	rb_ib_repush+=("$rb_s")
	rb_time rb_s "$rb_logs/bh-repush" $BUILDAH push -q --tls-verify=false localhost/bench:latest \
		"docker://127.0.0.1:$rb_bh_port/bench/bh:1"
	rb_bh_repush+=("$rb_s")
	rb_ib_stored=$(du -sh "$rb_dir/ib-$rb_i/data" | cut -f1)
	rb_bh_stored=$(du -sh "$rb_dir/bh-$rb_i/data" | cut -f1)
	# keep the last pair: the pulls and the 1 GB layer use them
	if [ "$rb_i" -lt "$rb_trials" ]; then
		rb_stop ib-$rb_i
		rb_stop bh-$rb_i
	fi
done

# pull into an empty store: both tools fetch what imgbuild pushed
rb_src=127.0.0.1:$rb_ib_port/bench/ib:1
for rb_i in $(seq "$rb_trials"); do
	rm -rf "$rb_dir/pullroot" "$rb_dir/skopeo-oci"
	rb_time rb_s "$rb_logs/ib-pull" env IMGBUILD_ROOT="$rb_dir/pullroot" $IB -q pull "$rb_src"
	rb_ib_pull+=("$rb_s")
	rb_pulled_digest=$(tail -n 1 "$rb_logs/ib-pull.out")
	[ "$rb_pulled_digest" = "$rb_pushed_digest" ] ||
		rb_fail "pulled $rb_pulled_digest, pushed $rb_pushed_digest"
	rb_time rb_s "$rb_logs/sk-pull" skopeo copy -q --src-tls-verify=false "docker://$rb_src" \
		"oci:$rb_dir/skopeo-oci:bench"
	rb_sk_pull+=("$rb_s")
done
rm -rf "$rb_dir/pullroot" "$rb_dir/skopeo-oci"

# the 1 GB layer: wall time and peak RSS, pushing to registries of its own
# (fresh each trial, so neither holds that blob yet) and pulling it back
$IB -q build "$BIG/recipe.lua" -t localhost/big:latest >/dev/null
skopeo copy -q "oci:$IMGBUILD_ROOT/oci:localhost/big:latest" \
	"containers-storage:[overlay@$BUILDAH_ROOT/storage+$BUILDAH_ROOT/run]localhost/big:latest" \
	>/dev/null
rb_big=(ib_push_s ib_push_mb bh_push_s bh_push_mb ib_pull_s ib_pull_mb sk_pull_s sk_pull_mb)
for rb_k in "${rb_big[@]}"; do
	declare -ga "rb_big_$rb_k=()"
done
# rb_big_add NAME VALUE: one more sample of a 1 GB figure
rb_big_add() {
	local -n rb_arr=rb_big_$1
	rb_arr+=("$2")
}
for rb_i in $(seq "$rb_trials"); do
	rb_start big-ib-$rb_i
	rb_big_ib_port=$rb_port
	rb_start big-bh-$rb_i
	rb_big_bh_port=$rb_port
	rb_mem rb_s rb_mb "$rb_logs/ib-bigpush" $IB -q push localhost/big:latest \
		"127.0.0.1:$rb_big_ib_port/bench/big:1"
	rb_big_add ib_push_s "$rb_s"
	rb_big_add ib_push_mb "$rb_mb"
	rb_mem rb_s rb_mb "$rb_logs/bh-bigpush" $BUILDAH push -q --tls-verify=false \
		localhost/big:latest "docker://127.0.0.1:$rb_big_bh_port/bench/big:1"
	rb_big_add bh_push_s "$rb_s"
	rb_big_add bh_push_mb "$rb_mb"
	rm -rf "$rb_dir/pullroot" "$rb_dir/skopeo-oci"
	rb_mem rb_s rb_mb "$rb_logs/ib-bigpull" env IMGBUILD_ROOT="$rb_dir/pullroot" $IB -q pull \
		"127.0.0.1:$rb_big_ib_port/bench/big:1"
	rb_big_add ib_pull_s "$rb_s"
	rb_big_add ib_pull_mb "$rb_mb"
	[ "$(tail -n 1 "$rb_logs/ib-bigpull.out")" = "$(tail -n 1 "$rb_logs/ib-bigpush.out")" ] ||
		rb_fail "the 1 GB image pulled back is not the one pushed"
	rm -rf "$rb_dir/pullroot"
	rb_mem rb_s rb_mb "$rb_logs/sk-bigpull" skopeo copy -q --src-tls-verify=false \
		"docker://127.0.0.1:$rb_big_ib_port/bench/big:1" "oci:$rb_dir/skopeo-oci:big"
	rb_big_add sk_pull_s "$rb_s"
	rb_big_add sk_pull_mb "$rb_mb"
	rm -rf "$rb_dir/pullroot" "$rb_dir/skopeo-oci"
	rb_stop big-ib-$rb_i
	rb_stop big-bh-$rb_i
done
for rb_k in "${rb_big[@]}"; do
	declare -n rb_arr=rb_big_$rb_k
	printf -v "rb_big_m_$rb_k" '%s' "$(rb_median "${rb_arr[@]}")"
	unset -n rb_arr
done

rb_stop_all

rb_s1=$(rb_median "${rb_ib_push[@]}") rb_s2=$(rb_median "${rb_bh_push[@]}")
rb_s3=$(rb_median "${rb_ib_repush[@]}") rb_s4=$(rb_median "${rb_bh_repush[@]}")
rb_s5=$(rb_median "${rb_ib_pull[@]}") rb_s6=$(rb_median "${rb_sk_pull[@]}")
row "push, empty registry" s "$rb_s1" "$rb_s2" - \
	"$(rb_check "$(ratio "$rb_s1" "$rb_s2")" '<=' 1.0 x)"
row "re-push, registry has it" s "$rb_s3" "$rb_s4" - "$(rb_check "$rb_s3" '<' 0.2 ' s')"
row "pull, empty store (skopeo)" s "$rb_s5" "$rb_s6" - \
	"$(rb_check "$(ratio "$rb_s5" "$rb_s6")" '<=' 1.0 x)"
row "push 1 GB layer" s "$rb_big_m_ib_push_s" "$rb_big_m_bh_push_s" - ""
row "pull 1 GB layer (skopeo)" s "$rb_big_m_ib_pull_s" "$rb_big_m_sk_pull_s" - ""
row "peak RSS, push 1 GB layer" MB "$rb_big_m_ib_push_mb" "$rb_big_m_bh_push_mb" - \
	"$(rb_check "$rb_big_m_ib_push_mb" '<=' 64 ' MB')"
row "peak RSS, pull 1 GB (skopeo)" MB "$rb_big_m_ib_pull_mb" "$rb_big_m_sk_pull_mb" - \
	"$(rb_check "$rb_big_m_ib_pull_mb" '<=' 64 ' MB')"
note "(skopeo) rows: the buildah column is skopeo copy docker:// -> oci:, not buildah"
note "registry storage after pushing the reference image: $rb_ib_stored (imgbuild)," \
	"$rb_bh_stored (buildah)"
