//! Where the binaries the tests run are: nginx from nginx-sys's build, the module and the writer
//! from this workspace's cargo build, the error pages from `html/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The binaries and files the tests run.
pub struct Paths {
    pub nginx: PathBuf,
    pub module: PathBuf,
    pub writer: PathBuf,
    pub html: PathBuf,
}

/// Locates the build outputs: nginx from nginx-sys's build directory, the module and the writer
/// next to this test binary's `deps/` directory.
pub fn paths() -> &'static Paths {
    static PATHS: OnceLock<Paths> = OnceLock::new();
    PATHS.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/e2e-… → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        let nginx = match option_env!("SET_BACKEND_NGINX_BUILD_DIR") {
            Some(dir) => PathBuf::from(dir).join("nginx"),
            None => panic!("nginx-sys did not report its build directory"),
        };
        let module = profile_dir.join("libngx_http_set_backend_module.so");
        let writer = profile_dir.join("set-backend");
        let html = Path::new(env!("CARGO_MANIFEST_DIR")).join("../html");
        for (what, p) in [("nginx", &nginx), ("the module", &module)] {
            assert!(
                p.exists(),
                "{what} not found at {}: run `cargo build --workspace` (or `make test`) first",
                p.display()
            );
        }
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../module/src");
        assert!(
            !newer_than(&sources, &module) && !newer_than(&html, &module),
            "{} is older than the module's sources: run `cargo build --workspace` (or `make test`)",
            module.display()
        );
        Paths {
            nginx,
            module,
            writer,
            html,
        }
    })
}

/// True when a file in `dir` was modified after `output` was built.
fn newer_than(dir: &Path, output: &Path) -> bool {
    let Ok(built) = fs::metadata(output).and_then(|m| m.modified()) else {
        return true;
    };
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .any(|t| t > built)
}

/// True when the writer binary has been built (`cargo build --workspace`).
pub fn writer_built() -> bool {
    paths().writer.exists()
}
