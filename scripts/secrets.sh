#!/usr/bin/env bash
# make secrets FQDN=nb.example.org EMAIL=ops@example.org
#
# Gets a Let's Encrypt certificate for FQDN with Debian's certbot and links it
# into ${STATE_DIR:-./state}/tls/, then prints the NBGATE_TLS_CERT/NBGATE_TLS_KEY
# lines to use. The links follow certbot's live/ directory, so `certbot renew`
# replaces what nbgate serves and nbgate reloads it within seconds, no restart.
#
# The HTTP-01 challenge is answered by certbot itself on HTTP01_PORT (default 80,
# which must be free and reachable from the internet as FQDN:80), or, with
# ACME_WEBROOT=DIR, by whatever already serves DIR/.well-known/acme-challenge/
# on port 80 (nbgate's HTTP redirect listener serves <state>/letsencrypt/webroot).
#
# Environment:
#   FQDN, EMAIL      required (or as arguments: secrets.sh FQDN EMAIL)
#   STATE_DIR        default $NBGATE_STATE_DIR or ./state; certbot keeps its files in
#                    STATE_DIR/letsencrypt
#   ACME_SERVER      ACME directory URL (default: Let's Encrypt production);
#                    e.g. https://acme-staging-v02.api.letsencrypt.org/directory
#   HTTP01_PORT      default 80
#   HTTP01_ADDRESS   address certbot's standalone server binds (default: all)
#   ACME_WEBROOT     use --webroot with this directory instead of --standalone
set -euo pipefail

die() {
  echo "secrets: $*" >&2
  exit 1
}
# Quote untrusted input when echoing it back.
q() { printf '%q' "$1"; }

FQDN=${FQDN:-${1:-}}
EMAIL=${EMAIL:-${2:-}}
STATE_DIR=${STATE_DIR:-${NBGATE_STATE_DIR:-./state}}
HTTP01_PORT=${HTTP01_PORT:-80}
HTTP01_ADDRESS=${HTTP01_ADDRESS:-}
ACME_SERVER=${ACME_SERVER:-}
ACME_WEBROOT=${ACME_WEBROOT:-}

usage="usage: make secrets FQDN=nb.example.org EMAIL=you@example.org"
[ -n "$FQDN" ] || die "FQDN is required. $usage"
[ -n "$EMAIL" ] || die "EMAIL is required (Let's Encrypt sends expiry warnings there). $usage"

# Both values reach certbot's command line: only plain names get through.
# FQDN: lowercase letters/digits/hyphens in dot-separated labels of 1-63
# characters, at least two labels, an alphabetic last label, 253 at most.
label='[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?'
fqdn_re="^(${label}\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?\$"
if [ ${#FQDN} -gt 253 ] || ! [[ $FQDN =~ $fqdn_re ]]; then
  die "FQDN: expected a lowercase DNS name such as nb.example.org, got $(q "$FQDN")"
fi
email_re='^[A-Za-z0-9_%+][A-Za-z0-9._%+-]{0,63}@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$'
if [ ${#EMAIL} -gt 254 ] || ! [[ $EMAIL =~ $email_re ]]; then
  die "EMAIL: expected an address such as ops@example.org, got $(q "$EMAIL")"
fi
if ! [[ $HTTP01_PORT =~ ^[0-9]{1,5}$ ]] || [ "$HTTP01_PORT" -lt 1 ] || [ "$HTTP01_PORT" -gt 65535 ]; then
  die "HTTP01_PORT: expected a port number, got $(q "$HTTP01_PORT")"
fi
if [ -n "$HTTP01_ADDRESS" ] && ! [[ $HTTP01_ADDRESS =~ ^[0-9A-Fa-f.:]{2,45}$ ]]; then
  die "HTTP01_ADDRESS: expected an IP address such as 127.0.0.1, got $(q "$HTTP01_ADDRESS")"
fi
if [ -n "$ACME_SERVER" ] && ! [[ $ACME_SERVER =~ ^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$ ]]; then
  die "ACME_SERVER: expected an https:// directory URL, got $(q "$ACME_SERVER")"
fi
case "$ACME_WEBROOT" in -*) die "ACME_WEBROOT: expected a directory, got $(q "$ACME_WEBROOT")" ;; esac

command -v certbot >/dev/null || die "certbot is not installed: apt-get install certbot"

mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
le="$STATE_DIR/letsencrypt"
tls="$STATE_DIR/tls"
mkdir -p "$le" "$tls"
chmod 700 "$le" "$tls"

args=(certonly -n --agree-tos --no-eff-email --keep-until-expiring
  -d "$FQDN" --cert-name "$FQDN" -m "$EMAIL"
  --config-dir "$le" --work-dir "$le/work" --logs-dir "$le/logs")
if [ -n "$ACME_SERVER" ]; then args+=(--server "$ACME_SERVER"); fi
if [ -n "$ACME_WEBROOT" ]; then
  mkdir -p "$ACME_WEBROOT/.well-known/acme-challenge"
  args+=(--webroot -w "$ACME_WEBROOT")
else
  args+=(--standalone --preferred-challenges http --http-01-port "$HTTP01_PORT")
  if [ -n "$HTTP01_ADDRESS" ]; then args+=(--http-01-address "$HTTP01_ADDRESS"); fi
fi

ca=${ACME_SERVER:-the Let\'s Encrypt production CA}
echo "secrets: asking $ca for a certificate for $FQDN" >&2
if ! certbot "${args[@]}" >&2; then
  if [ -n "$ACME_WEBROOT" ]; then
    hint="is $ACME_WEBROOT/.well-known/acme-challenge/ served on http://$FQDN/?"
  else
    hint="does $FQDN resolve to this machine, and is port $HTTP01_PORT free and reachable from the internet?"
  fi
  die "certbot failed ($hint); its log is in $le/logs/letsencrypt.log"
fi

live="$le/live/$FQDN"
for f in fullchain.pem privkey.pem; do
  [ -s "$live/$f" ] || die "certbot succeeded but $live/$f is missing"
  # Relative links into live/, which certbot renew repoints at the new files.
  ln -sfn "../letsencrypt/live/$FQDN/$f" "$tls/$f"
done

dirs="--config-dir $le --work-dir $le/work --logs-dir $le/logs"
cat >&2 <<MSG
secrets: certificate for $FQDN in $tls (links into $live)
secrets: renew it from cron (Debian's certbot.timer only looks at /etc/letsencrypt);
secrets: nbgate notices the new files and serves them within seconds, no restart:
secrets:   certbot renew -q $dirs
secrets: while nbgate's NBGATE_HTTP_REDIRECT listener holds port 80, renew through it instead:
secrets:   certbot renew -q $dirs --webroot -w $le/webroot
MSG
echo "NBGATE_TLS_CERT=$tls/fullchain.pem"
echo "NBGATE_TLS_KEY=$tls/privkey.pem"
