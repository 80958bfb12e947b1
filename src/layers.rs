//! The layering rule of `lib.rs`, checked on the source: a module may use
//! its own layer and the layers below it, never one above. A test, so an
//! import that points the wrong way (or a circle between layers) fails
//! `make test` instead of slipping in.

/// The layers, lowest first; each top-level module of the crate is in one.
const LAYERS: &[(&str, u8)] =
    &[("input", 0), ("health", 1), ("zone", 2), ("dns", 3), ("control", 4), ("metrics", 5), ("cli", 5), ("daemon", 6)];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// Every `crate::MODULE` named on a code line (comments are skipped) of
/// the files under `dir`, with the file and line.
fn uses(dir: &std::path::Path, out: &mut Vec<(String, usize, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            uses(&p, out);
            continue;
        }
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                let after = &rest[at + "crate::".len()..];
                let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                out.push((p.display().to_string(), i + 1, name));
                rest = after;
            }
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for (module, own) in LAYERS {
        let dir = src.join(module);
        let mut found = Vec::new();
        if dir.is_dir() {
            uses(&dir, &mut found);
        } else {
            uses_file(&src.join(format!("{module}.rs")), &mut found);
        }
        for (file, line, used) in found {
            match layer(&used) {
                Some(l) if l > *own => bad.push(format!("{file}:{line}: {module} (layer {own}) uses crate::{used} (layer {l})")),
                _ => {}
            }
        }
    }
    assert!(bad.is_empty(), "imports that point up the layers:\n{}", bad.join("\n"));
}

fn uses_file(file: &std::path::Path, out: &mut Vec<(String, usize, String)>) {
    let Some(dir) = file.parent() else { return };
    let mut all = Vec::new();
    uses(dir, &mut all);
    out.extend(all.into_iter().filter(|(f, _, _)| std::path::Path::new(f) == file));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let modules: Vec<&str> = lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")).map(|m| m.trim_end_matches(';')).collect();
    assert!(modules.len() >= 8, "{modules:?}");
    for m in modules {
        assert!(layer(m).is_some(), "src/lib.rs: module {m} is in no layer of src/layers.rs");
    }
}
