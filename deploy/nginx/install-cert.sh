#!/bin/sh
# certbot deploy hook: copy a new certificate where the nginx container reads it, then
# reload nginx if it runs. certbot sets RENEWED_LINEAGE (/etc/letsencrypt/live/<name>).
#   certbot certonly --standalone -d tempo.example.org \
#       --deploy-hook /srv/tempo/deploy/nginx/install-cert.sh
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
certs="$here/certs"
mkdir -p "$certs"
umask 027
cp -L "$RENEWED_LINEAGE/fullchain.pem" "$certs/fullchain.pem.new"
cp -L "$RENEWED_LINEAGE/privkey.pem" "$certs/privkey.pem.new"
# nginx runs as uid/gid 101 in its container and only needs to read them.
chgrp 101 "$certs/fullchain.pem.new" "$certs/privkey.pem.new"
chmod 0640 "$certs/fullchain.pem.new" "$certs/privkey.pem.new"
mv "$certs/fullchain.pem.new" "$certs/fullchain.pem"
mv "$certs/privkey.pem.new" "$certs/privkey.pem"
cd "$here/../.."
if docker compose ps --status running --services 2>/dev/null | grep -qx nginx; then
    docker compose exec -T nginx nginx -s reload
fi
