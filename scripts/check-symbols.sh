#!/usr/bin/env bash
# Prints the highest GLIBC_ and GLIBCXX_ symbol versions that each binary
# needs, and fails past the limits: glibc 2.28 (the oldest glibc Node's
# official Linux x64 binaries run on) and no GLIBCXX/CXXABI at all (libstdc++
# is linked statically, so the binaries do not depend on the build machine's).
#   bash scripts/check-symbols.sh build/Release/moe_kernels.node build-cuda/libmoe_cuda.so
set -euo pipefail
max_glibc="2.28"
status=0
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }
for binary in "$@"; do
  [ -f "$binary" ] || { echo "missing: $binary"; status=1; continue; }
  versions=$(objdump -T "$binary" | grep -oE '\((GLIBC|GLIBCXX|CXXABI)_[0-9.]+\)' | tr -d '()' | sort -u)
  glibc=$(echo "$versions" | grep '^GLIBC_' | sed 's/GLIBC_//' | sort -V | tail -1)
  glibcxx=$(echo "$versions" | grep -E '^(GLIBCXX|CXXABI)_' | sort -V | tail -1 || true)
  printf '%-44s highest GLIBC_%s  %s\n' "$binary" "${glibc:-none}" "${glibcxx:-no GLIBCXX/CXXABI (static libstdc++)}"
  if [ -n "$glibc" ] && ! version_le "$glibc" "$max_glibc"; then
    echo "  FAIL: needs GLIBC_$glibc > $max_glibc:"; objdump -T "$binary" | grep -E "GLIBC_($glibc)" | awk '{print "   ", $NF}'
    status=1
  fi
  if [ -n "$glibcxx" ]; then echo "  FAIL: depends on the system libstdc++ ($glibcxx)"; status=1; fi
  if ldd "$binary" 2>/dev/null | grep -qE 'libstdc\+\+|libgcc_s|libcuda\.so'; then
    echo "  FAIL: links libstdc++, libgcc_s or libcuda dynamically:"; ldd "$binary" | grep -E 'libstdc|libgcc_s|libcuda'
    status=1
  fi
done
exit $status
