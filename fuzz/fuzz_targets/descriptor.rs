//! Any text as a product descriptor: YAML parsing, field checks, types, locations,
//! policies, quality checks and SLAs. It must yield a product or a clear error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let root = Path::new("/nonexistent-mesh-root");
    let _ = meshgate_catalog::product_from_text(root, &root.join("fuzz/product.yaml"), text);
});
