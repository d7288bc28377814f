# The release image of set-backend: nginx with the set_backend module, and the writer daemon,
# on an empty base that holds only the files they run with. See README.md, "Container".
#
#   make container        # builds this file with docker or podman (podman: --format docker,
#                         # or the HEALTHCHECK is dropped)
#   docker run -d -e DOMAIN=example.com -e API_TOKEN=… -p 80:80 \
#       -v sb-data:/var/lib/set-backend set-backend
#
# Stages: `build` compiles nginx (release options, --with-compat) from the source of the
# nginx-src crate that Cargo.lock pins, the module against that very nginx tree, and the
# writer; it then assembles /rootfs: the binaries, the shared libraries `ldd` names, users,
# the configuration template, the error pages and the licences. The final stage is that
# directory on `scratch`: no shell, no package manager, no compiler.

FROM rust:1-bookworm AS build

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config make binutils \
      protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*

# Release profile for the image: no debug info, symbols stripped (the workspace's release
# profile keeps line tables for the benchmarks' profiles).
ENV CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    NGINX_SOURCE_DIR=/usr/src/nginx \
    NGINX_BUILD_DIR=/usr/src/nginx/objs

# 1. nginx. Only Cargo.lock matters here, so this layer survives source changes. The source
#    is the nginx-src crate's (fetched, checksum-verified, by cargo); the options are those of
#    a release build (nginx.org's packages' paths and hardening flags), with --with-compat so
#    the dynamic module's signature matches.
COPY Cargo.lock /tmp/lock/Cargo.lock
RUN --mount=type=cache,id=set-backend-cargo-registry,target=/usr/local/cargo/registry \
    set -eu; \
    ver=$(sed -n '/^name = "nginx-src"$/{n;s/^version = "\(.*\)"$/\1/p;}' /tmp/lock/Cargo.lock); \
    test -n "$ver"; \
    mkdir -p /tmp/fetch/src && cd /tmp/fetch && : > src/lib.rs; \
    printf '[package]\nname = "fetch-nginx-src"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nnginx-src = "=%s"\n' \
      "$ver" > Cargo.toml; \
    cargo fetch -q; \
    mkdir -p /usr/src/crate && tar -xzf /usr/local/cargo/registry/cache/*/nginx-src-"$ver".crate -C /usr/src/crate; \
    mv /usr/src/crate/nginx-src-"$ver"/nginx /usr/src/nginx; \
    rm -rf /tmp/fetch /usr/src/crate; \
    cd /usr/src/nginx; \
    auto/configure \
      --prefix=/etc/nginx \
      --sbin-path=/usr/sbin/nginx \
      --modules-path=/usr/lib/nginx/modules \
      --conf-path=/etc/nginx/nginx.conf \
      --error-log-path=stderr \
      --http-log-path=/dev/stdout \
      --pid-path=/run/nginx/nginx.pid \
      --lock-path=/run/nginx/nginx.lock \
      --http-client-body-temp-path=/var/cache/nginx/client_temp \
      --http-proxy-temp-path=/var/cache/nginx/proxy_temp \
      --http-fastcgi-temp-path=/var/cache/nginx/fastcgi_temp \
      --http-uwsgi-temp-path=/var/cache/nginx/uwsgi_temp \
      --http-scgi-temp-path=/var/cache/nginx/scgi_temp \
      --user=nginx --group=nginx \
      --with-compat \
      --with-threads \
      --with-file-aio \
      --with-http_ssl_module \
      --with-http_v2_module \
      --with-http_realip_module \
      --with-http_stub_status_module \
      --with-cc-opt='-O2 -fstack-protector-strong -Wformat -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2' \
      --with-ld-opt='-Wl,-z,relro -Wl,-z,now -Wl,--as-needed -pie' \
      > /tmp/nginx-configure.log; \
    make -j"$(nproc)" -f objs/Makefile binary > /tmp/nginx-make.log; \
    objs/nginx -V

# 2. The module (against /usr/src/nginx, through NGINX_SOURCE_DIR/NGINX_BUILD_DIR: nginx-sys
#    then takes that tree instead of building its own), the writer, and the container's PID 1,
#    set-backend-init (container/init). The cache mounts keep the registry and the target
#    directory between builds, so a source change recompiles only what changed.
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=set-backend-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=set-backend-target,target=/src/target \
    set -eu; \
    cargo build --release --locked -p ngx_http_set_backend_module -p set-backend-writer \
      -p set-backend-init; \
    mkdir -p /out; \
    cp target/release/libngx_http_set_backend_module.so target/release/set-backend \
       target/release/set-backend-init /out/

# 3. The runtime tree.
RUN set -eu; \
    R=/rootfs; \
    mkdir -p $R/usr/bin $R/usr/sbin $R/usr/lib/nginx/modules $R/usr/lib64 \
      $R/etc/nginx $R/etc/set-backend $R/usr/share/set-backend/html $R/usr/share/doc \
      $R/var/lib/set-backend $R/var/cache/nginx $R/run $R/tmp; \
    ln -s usr/lib $R/lib; ln -s usr/lib64 $R/lib64; \
    install -m 0755 -s /usr/src/nginx/objs/nginx $R/usr/sbin/nginx; \
    install -m 0755 /out/set-backend /out/set-backend-init $R/usr/bin/; \
    install -m 0644 /out/libngx_http_set_backend_module.so \
      $R/usr/lib/nginx/modules/ngx_http_set_backend_module.so; \
    for f in $R/usr/sbin/nginx $R/usr/bin/* $R/usr/lib/nginx/modules/*.so; do ldd "$f"; done \
      | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u > /tmp/libs; \
    while read -r lib; do \
      dir=$(readlink -f "$(dirname "$lib")"); mkdir -p "$R$dir"; \
      cp -L "$lib" "$R$dir/$(basename "$lib")"; \
      pkg=$({ dpkg -S "$lib" || dpkg -S "$(readlink -f "$lib")"; } 2>/dev/null | head -n1 | cut -d: -f1); \
      test -n "$pkg"; \
      mkdir -p "$R/usr/share/doc/$pkg"; cp "/usr/share/doc/$pkg/copyright" "$R/usr/share/doc/$pkg/"; \
    done < /tmp/libs; \
    mkdir -p $R/usr/share/doc/nginx $R/usr/share/doc/set-backend; \
    cp /usr/src/nginx/LICENSE $R/usr/share/doc/nginx/copyright; \
    cp /src/LICENSE* $R/usr/share/doc/set-backend/ 2>/dev/null || true; \
    cp /usr/src/nginx/conf/mime.types $R/etc/nginx/mime.types; \
    cp /src/container/nginx.conf.template /src/container/route-*.conf $R/etc/set-backend/; \
    cp /src/html/*.html $R/usr/share/set-backend/html/; \
    printf '%s\n' \
      'root:x:0:0:root:/root:/usr/sbin/nologin' \
      'nginx:x:101:101:nginx workers:/nonexistent:/usr/sbin/nologin' \
      'set-backend:x:102:102:set-backend writer:/var/lib/set-backend:/usr/sbin/nologin' \
      'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' > $R/etc/passwd; \
    printf '%s\n' 'root:x:0:' 'nginx:x:101:' 'set-backend:x:102:' 'nogroup:x:65534:' > $R/etc/group; \
    printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' > $R/etc/nsswitch.conf; \
    chown 102:102 $R/var/lib/set-backend; chmod 0755 $R/var/lib/set-backend; \
    chmod 1777 $R/tmp; \
    echo "runtime tree:"; find $R ! -type d | sort; du -sh $R

FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/usr/bin:/usr/sbin
EXPOSE 80
VOLUME ["/var/lib/set-backend"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/bin/set-backend-init", "health"]
LABEL org.opencontainers.image.title="set-backend" \
      org.opencontainers.image.description="nginx with runtime per-Host routing (set_backend) and its writer daemon" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/bin/set-backend-init"]
