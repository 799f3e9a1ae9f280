# shared_dirs VAR WHAT: the folders a containerised cluster shares with this host at the same paths (sourced
# by ci/htcondor/run.sh and ci/slurm/run.sh): /tmp, the checkout ($REPO) and the ':'-separated absolute
# folders in the variable named VAR, without those inside another one, one a line. WHAT names the cluster in
# the error for a path a bind cannot carry. Exits 2 on a bad folder.
shared_dirs() {
    local var=$1 what=$2
    local dirs=(/tmp "$REPO") extra d
    IFS=: read -r -a extra <<< "${!var:-}"
    for d in "${extra[@]}"; do
        [ -n "$d" ] || continue
        case "$d" in /*) ;; *) echo "$var: $d is not an absolute path" >&2; exit 2 ;; esac
        [ -d "$d" ] || { echo "$var: $d is not a folder" >&2; exit 2; }
        dirs+=("$(cd "$d" && pwd -P)")
    done
    for d in "${dirs[@]}"; do
        case "$d" in *[[:space:]\'\"]* | *:*) echo "cannot share $d with $what: blanks, quotes or ':' in the path" >&2
            exit 2 ;;
        esac
    done
    # drop folders inside another shared one
    local out=() a b inside
    for a in "${dirs[@]}"; do
        inside=0
        for b in "${dirs[@]}"; do
            [ "$a" != "$b" ] && case "$a/" in "$b"/*) inside=1 ;; esac
        done
        [ $inside = 1 ] || out+=("$a")
    done
    printf '%s\n' "${out[@]}" | sort -u
}
