# shellcheck shell=bash
# `scripts/services.sh up --secure`: the local platform with secured connections beside the plain ones.
# Sourced by scripts/services.sh, whose variables (CACHE, KAFKA_*, PG_*, log, die, as_postgres) it uses.
#
# - A local CA (openssl) signs a broker certificate and a PostgreSQL server certificate, both for
#   127.0.0.1 and localhost. Everything lives in $CACHE/state/secure; keys are mode 0600.
# - The broker gets a SASL_SSL listener with SCRAM-SHA-512 on 127.0.0.1:$KAFKA_SASL_PORT beside its
#   PLAINTEXT one; its key store (PKCS12, from openssl) and trust store (keytool) come from the CA.
# - A SCRAM user is created with Kafka's own ConfigCommand over the plaintext listener, its password
#   given in a file, never on a command line.
# - PostgreSQL gets ssl=on with the server certificate, so `sslmode=verify-full` works against the CA.
#
# Once set up (the state folder holds the CA), `services.sh env` prints the secured settings.

SECURE="${SECURE:-0}"
SECURE_DIR="$CACHE/state/secure"
KAFKA_SASL_PORT="${SERVICES_KAFKA_SASL_PORT:-9094}"
SECURE_USER="${SERVICES_KAFKA_SASL_USER:-weatherflow}"
SECURE_CA="$SECURE_DIR/ca.pem"
SECURE_PASSWORD_FILE="$SECURE_DIR/kafka-sasl.password"
SECURE_STORE_PASSWORD_FILE="$SECURE_DIR/keystore.password"

secure_ready() { [ -f "$SECURE_CA" ] && [ -f "$SECURE_PASSWORD_FILE" ]; }

# A random secret of 32 hex characters in a new file of mode 0600.
secure_new_secret() {
  [ -s "$1" ] && return
  (umask 077; openssl rand -hex 16 >"$1")
}

# A key and a certificate for 127.0.0.1 and localhost, signed by the CA: secure_leaf <name> <CN>.
secure_leaf() {
  local name="$1" cn="$2" d="$SECURE_DIR"
  [ -f "$d/$name.pem" ] && return
  (umask 077; openssl genrsa -out "$d/$name.key" 2048 2>/dev/null)
  openssl req -new -key "$d/$name.key" -subj "/CN=$cn" -out "$d/$name.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$d/$name.ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$d/$name.ext" -out "$d/$name.pem" 2>/dev/null \
    || die "openssl could not sign the $name certificate"
  rm -f "$d/$name.csr" "$d/$name.ext"
}

# The CA, the broker's and PostgreSQL's certificates, the broker's key and trust stores, the SCRAM
# password. Idempotent: what exists is kept.
secure_certs() {
  command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
  command -v keytool >/dev/null || die "keytool not found (it comes with the Java runtime)"
  mkdir -p "$SECURE_DIR"; chmod 700 "$SECURE_DIR"
  if [ ! -f "$SECURE_CA" ]; then
    log "creating a local CA in $SECURE_DIR"
    (umask 077; openssl genrsa -out "$SECURE_DIR/ca.key" 2048 2>/dev/null)
    openssl req -x509 -new -key "$SECURE_DIR/ca.key" -sha256 -days 825 \
      -subj "/CN=weatherflow local CA" -out "$SECURE_CA" 2>/dev/null || die "openssl could not make the CA"
  fi
  secure_leaf broker "weatherflow broker"
  secure_leaf postgres "weatherflow postgresql"
  secure_new_secret "$SECURE_STORE_PASSWORD_FILE"
  secure_new_secret "$SECURE_PASSWORD_FILE"
  if [ ! -f "$SECURE_DIR/broker.keystore.p12" ]; then
    (umask 077; openssl pkcs12 -export -in "$SECURE_DIR/broker.pem" -inkey "$SECURE_DIR/broker.key" \
      -certfile "$SECURE_CA" -name broker -passout "file:$SECURE_STORE_PASSWORD_FILE" \
      -out "$SECURE_DIR/broker.keystore.p12") || die "openssl could not make the broker's key store"
  fi
  if [ ! -f "$SECURE_DIR/truststore.p12" ]; then
    keytool -importcert -noprompt -alias weatherflow-ca -file "$SECURE_CA" -storetype PKCS12 \
      -keystore "$SECURE_DIR/truststore.p12" -storepass:file "$SECURE_STORE_PASSWORD_FILE" >/dev/null 2>&1 \
      || die "keytool could not make the trust store"
  fi
  # keytool checks the key store opens with its password (a broken store fails here, not in the broker).
  keytool -list -storetype PKCS12 -keystore "$SECURE_DIR/broker.keystore.p12" \
    -storepass:file "$SECURE_STORE_PASSWORD_FILE" >/dev/null 2>&1 || die "the broker's key store does not open"
}

# Rewrites the broker's properties (written by kafka_write_props) to add the SASL_SSL listener.
secure_kafka_props() {
  [ "$SECURE" = 1 ] || return 0
  local l="SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_PORT" pw
  pw="$(cat "$SECURE_STORE_PASSWORD_FILE")"
  sed -i -e "s|^listeners=\(.*\)|listeners=\1,$l|" \
    -e "s|^advertised.listeners=\(.*\)|advertised.listeners=\1,$l|" \
    -e "s|^listener.security.protocol.map=\(.*\)|listener.security.protocol.map=\1,SASL_SSL:SASL_SSL|" \
    "$KAFKA_PROPS"
  # The file exists already with the default mode: tighten it before the passwords go in.
  chmod 600 "$KAFKA_PROPS"
  (umask 077; cat >>"$KAFKA_PROPS" <<EOF
# SASL_SSL listener (scripts/services.sh up --secure): SCRAM-SHA-512 over TLS, certificate from the local CA.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$SECURE_DIR/broker.keystore.p12
ssl.keystore.password=$pw
ssl.key.password=$pw
ssl.truststore.type=PKCS12
ssl.truststore.location=$SECURE_DIR/truststore.p12
ssl.truststore.password=$pw
EOF
  )
}

# The SCRAM user, through the plaintext listener with Kafka's ConfigCommand; the password goes in a
# properties file (mode 0600) so that it is on no command line, and is masked in what the tool prints.
secure_kafka_user() {
  local file="$SECURE_DIR/scram.properties" out="$SECURE_DIR/scram.out" pw rc=0
  pw="$(cat "$SECURE_PASSWORD_FILE")"
  # In a file the value has no brackets (those group a value on the command line only).
  (umask 077; printf 'SCRAM-SHA-512=iterations=8192,password=%s\n' "$pw" >"$file")
  (umask 077; timeout 60 java -Xmx128m -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.ConfigCommand \
    --bootstrap-server "$BOOTSTRAP" --alter --entity-type users --entity-name "$SECURE_USER" \
    --add-config-file "$file" >"$out" 2>&1) || rc=$?
  rm -f "$file"
  if [ $rc != 0 ]; then
    grep -v 'INFO' "$out" | sed "s/$pw/***/g" | tail -n 20 >&2
    rm -f "$out"
    die "could not create the SCRAM user $SECURE_USER"
  fi
  rm -f "$out"
  log "SCRAM-SHA-512 user $SECURE_USER ready on SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_PORT"
}

# ssl=on on the PostgreSQL cluster <version> <name>, with the server certificate copied into its
# data directory (the server reads its key only when the postgres user owns it, mode 0600).
secure_pg() {
  [ "$SECURE" = 1 ] || return 0
  local ver="$1" name="$2" data
  data="$(pg_lsclusters -h | awk -v v="$ver" -v n="$name" '$1==v && $2==n {print $6}')"
  [ -n "$data" ] || die "no PostgreSQL cluster $ver/$name"
  as_root install -o postgres -g postgres -m 600 "$SECURE_DIR/postgres.key" "$data/weatherflow-server.key"
  as_root install -o postgres -g postgres -m 644 "$SECURE_DIR/postgres.pem" "$data/weatherflow-server.pem"
  as_postgres psql -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres >/dev/null <<'SQL'
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = 'weatherflow-server.pem';
ALTER SYSTEM SET ssl_key_file = 'weatherflow-server.key';
SELECT pg_reload_conf();
SQL
  local deadline=$((SECONDS + 10))
  until [ "$(as_postgres psql -tA -p "$PG_PORT" -d postgres -c 'SHOW ssl')" = on ]; do
    [ $SECONDS -lt $deadline ] || die "PostgreSQL did not turn ssl on (see its log)"
    sleep 0.3
  done
  log "postgresql on 127.0.0.1:$PG_PORT accepts TLS (certificate from $SECURE_CA)"
}

# The secured settings, `NAME=value` lines; the password masked unless the argument is `secret`.
secure_print_env() {
  local pw='***'
  if [ "${1:-}" = secret ]; then pw="$(cat "$SECURE_PASSWORD_FILE")"; fi
  echo "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_HOST:$KAFKA_SASL_PORT"
  echo "WEATHERFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
  echo "WEATHERFLOW_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
  echo "WEATHERFLOW_KAFKA_SASL_USERNAME=$SECURE_USER"
  echo "WEATHERFLOW_KAFKA_SASL_PASSWORD=$pw"
  echo "WEATHERFLOW_KAFKA_SSL_CA_LOCATION=$SECURE_CA"
  if [ "${1:-}" = secret ]; then
    echo "DATABASE_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB?sslmode=verify-full"
  else
    echo "DATABASE_URL=postgres://$PG_USER:***@127.0.0.1:$PG_PORT/$PG_DB?sslmode=verify-full"
  fi
  echo "WEATHERFLOW_DATABASE_SSL_ROOT_CERT=$SECURE_CA"
}
