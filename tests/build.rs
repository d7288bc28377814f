//! Tells the harness where the nginx built by nginx-sys lives.

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    if let Ok(dir) = std::env::var("DEP_NGINX_BUILD_DIR") {
        println!("cargo::rustc-env=SET_BACKEND_NGINX_BUILD_DIR={dir}");
    }
}
