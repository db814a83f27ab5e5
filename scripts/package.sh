#!/usr/bin/env bash
# Builds the Debian package: the release binary, a `keyplane` system user (made on install), a
# hardened systemd unit, /etc/keyplane/keyplane.toml, and the man page generated from the CLI's
# definition. Debian's own dpkg-deb assembles it.
#
#   scripts/package.sh [OUT_DIR]        # default target/debian; prints the package's path
#
# KEYPLANE_PACKAGE_BINARY=PATH packages that binary instead of building the release one (the
# test suite packages its debug build).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/debian}
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
arch=$(dpkg --print-architecture)
binary=${KEYPLANE_PACKAGE_BINARY:-}
if [ -z "$binary" ]; then
    cargo build --release --locked -p keyplane-cli >&2
    binary=target/release/keyplane
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/keyplane_${version}_${arch}
install -D -m 0755 "$binary" "$root/usr/bin/keyplane"
# As Debian packages ship binaries: without symbols or debugging sections.
strip --strip-unneeded "$root/usr/bin/keyplane"
install -d -m 0755 "$root/usr/share/man/man1" "$root/usr/share/doc/keyplane"
"$binary" manual | gzip -9n > "$root/usr/share/man/man1/keyplane.1.gz"
chmod 0644 "$root/usr/share/man/man1/keyplane.1.gz"
install -D -m 0644 packaging/debian/keyplane.service "$root/lib/systemd/system/keyplane.service"
install -D -m 0640 packaging/debian/keyplane.toml "$root/etc/keyplane/keyplane.toml"
install -m 0644 README.md "$root/usr/share/doc/keyplane/README.md"
install -d -m 0755 "$root/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
echo /etc/keyplane/keyplane.toml > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: keyplane
Version: $version
Architecture: $arch
Maintainer: Keyplane maintainers <keyplane@localhost>
Section: admin
Priority: optional
Installed-Size: $size
Depends: adduser, libc6
Description: key orchestrator speaking the UKO v4 API
 Keyplane generates encryption keys under a sealed master key, governs them by
 templates and the NIST lifecycle, and distributes them into internal and
 external keystores (cloud KMS services, Vault/OpenBao, KMIP servers, PKCS#11
 HSMs), with an audit trail and dual control.
CONTROL
mkdir -p "$out"
dpkg-deb --root-owner-group --build "$root" "$out" >&2
echo "$out/keyplane_${version}_${arch}.deb"
