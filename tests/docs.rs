//! Keeps the documentation true to the code: the configuration reference against the key registry, the
//! error reference against the API description, and every relative link in the Markdown files against
//! the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use mailbox_gateway::config::KEYS;

/// Variables the gateway reads from the environment only, outside the key registry, that the
/// configuration reference documents too.
const ENVIRONMENT_ONLY: &[&str] = &["RUST_LOG", "OTEL_EXPORTER_OTLP_ENDPOINT"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The cells of every table row in `markdown`, outside code blocks, trimmed.
fn table_rows(markdown: &str) -> Vec<Vec<String>> {
    let mut in_code = false;
    let mut rows = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let line = line.trim();
        if in_code || !line.starts_with('|') {
            continue;
        }
        let cells = line
            .trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().to_owned())
            .collect();
        rows.push(cells);
    }
    rows
}

/// `name` when `cell` is exactly one code span holding it.
fn code_span(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.is_empty() && !inner.contains('`')).then_some(inner)
}

/// The keys in the first column of docs/configuration.md's tables, with how often each appears.
fn documented_settings() -> BTreeMap<String, usize> {
    let mut keys = BTreeMap::new();
    for row in table_rows(&read("docs/configuration.md")) {
        let Some(key) = row.first().and_then(|cell| code_span(cell)) else {
            continue;
        };
        if key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            *keys.entry(key.to_owned()).or_default() += 1;
        }
    }
    keys
}

#[test]
fn every_setting_in_the_key_registry_has_one_row_in_the_configuration_reference() {
    let documented = documented_settings();
    for (key, _) in KEYS {
        match documented.get(*key) {
            None => panic!("{key} is in config::KEYS but has no row in docs/configuration.md"),
            Some(1) => {}
            Some(n) => panic!("{key} has {n} rows in docs/configuration.md; one is enough"),
        }
    }
}

#[test]
fn every_setting_in_the_configuration_reference_is_in_the_key_registry_or_read_from_the_environment_only(
) {
    let registered: BTreeSet<&str> = KEYS.iter().map(|(key, _)| *key).collect();
    for key in documented_settings().keys() {
        let key = key.as_str();
        if registered.contains(key) {
            continue;
        }
        assert!(
            !key.starts_with("MAILBOX_GATEWAY_") && !key.starts_with("AZURE_"),
            "docs/configuration.md documents {key}, which is not in config::KEYS"
        );
        assert!(
            ENVIRONMENT_ONLY.contains(&key),
            "docs/configuration.md documents {key}, which is neither in config::KEYS nor one of the \
             environment-only variables {ENVIRONMENT_ONLY:?}"
        );
    }
}

#[test]
fn the_error_reference_lists_exactly_the_codes_of_the_api_description() {
    let documented: BTreeSet<String> = table_rows(&read("docs/errors.md"))
        .iter()
        .filter(|row| row.len() >= 3 && row[0].parse::<u16>().is_ok())
        .filter_map(|row| code_span(&row[1]).map(str::to_owned))
        .collect();
    let openapi =
        yaml_rust2::YamlLoader::load_from_str(&read("openapi.yaml")).expect("openapi.yaml is YAML");
    let codes = &openapi[0]["components"]["schemas"]["Problem"]["properties"]["code"]["enum"];
    let described: BTreeSet<String> = codes
        .as_vec()
        .expect("openapi.yaml has components.schemas.Problem.properties.code.enum")
        .iter()
        .map(|code| code.as_str().expect("error codes are strings").to_owned())
        .collect();
    assert!(!described.is_empty(), "openapi.yaml lists no error codes");
    let missing: Vec<_> = described.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&described).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/errors.md and openapi.yaml disagree: missing from docs/errors.md {missing:?}, \
         not in openapi.yaml {unknown:?}"
    );
}

#[test]
fn the_api_description_lists_exactly_the_codes_the_gateway_answers_with() {
    // Every code is chosen in one place, `ApiError::classify` and `classify_upstream` in
    // src/api/error.rs, as `(StatusCode, "code", "Title")`: read them from there.
    let source = read("src/api/error.rs");
    let mut answered = BTreeSet::new();
    for (at, _) in source.match_indices("S::") {
        // `S::STATUS,` then whitespace, then the code in quotes.
        let rest =
            source[at + 3..].trim_start_matches(|c: char| c.is_ascii_uppercase() || c == '_');
        let Some(rest) = rest.strip_prefix(',') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix('"') else {
            continue;
        };
        answered.insert(rest[..rest.find('"').expect("a closed string")].to_owned());
    }
    assert!(answered.len() > 20, "too few codes found: {answered:?}");
    let openapi =
        yaml_rust2::YamlLoader::load_from_str(&read("openapi.yaml")).expect("openapi.yaml is YAML");
    let described: BTreeSet<String> = openapi[0]["components"]["schemas"]["Problem"]["properties"]
        ["code"]["enum"]
        .as_vec()
        .expect("openapi.yaml lists the error codes")
        .iter()
        .map(|code| code.as_str().expect("error codes are strings").to_owned())
        .collect();
    let missing: Vec<_> = answered.difference(&described).collect();
    let unknown: Vec<_> = described.difference(&answered).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "src/api/error.rs and openapi.yaml disagree: answered but not described {missing:?}, \
         described but never answered {unknown:?}"
    );
}

/// Every Markdown file of the repository, outside build output and hidden directories.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    walk(&path, files);
                }
            } else if name.ends_with(".md") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(root(), &mut files);
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("README.md")),
        "found no README.md"
    );
    files
}

/// The lines of `markdown` outside fenced code blocks, with inline code spans blanked out.
fn prose_lines(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut lines = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut prose = String::new();
        let mut in_span = false;
        for c in line.chars() {
            if c == '`' {
                in_span = !in_span;
            } else if !in_span {
                prose.push(c);
            }
        }
        lines.push(prose);
    }
    lines
}

/// The destinations of the inline (`[text](dest)`) and reference (`[label]: dest`) links in `markdown`.
fn link_destinations(markdown: &str) -> Vec<String> {
    let mut destinations = Vec::new();
    for line in prose_lines(markdown) {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some((_, rest)) = trimmed.split_once("]:") {
                if let Some(dest) = rest.split_whitespace().next() {
                    destinations.push(dest.to_owned());
                }
                continue;
            }
        }
        let mut rest = line.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let mut depth = 1;
            let mut end = after.len();
            for (i, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let inside = &after[..end];
            if let Some(dest) = inside.split_whitespace().next() {
                destinations.push(dest.trim_matches(|c| c == '<' || c == '>').to_owned());
            }
            rest = &after[end.min(after.len())..];
        }
    }
    destinations
}

/// GitHub's anchors for the headings of `markdown`: lower case, punctuation dropped, spaces to hyphens,
/// and `-1`, `-2`, ... after repeats.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if in_code {
            continue;
        }
        let text = heading.trim_start_matches('#');
        if !text.starts_with(' ') {
            continue;
        }
        let slug: String = text
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let count = seen.entry(slug.clone()).or_default();
        anchors.insert(if *count == 0 {
            slug.clone()
        } else {
            format!("{slug}-{count}")
        });
        *count += 1;
    }
    anchors
}

#[test]
fn every_relative_link_in_the_markdown_files_points_to_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("a readable Markdown file");
        let shown = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for dest in link_destinations(&text) {
            if dest.contains("://") || dest.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match dest.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (dest.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("a file has a directory").join(path)
            };
            if !target.exists() {
                broken.push(format!("{shown}: {dest} (no such file)"));
                continue;
            }
            if let Some(anchor) = anchor {
                if target.extension().is_some_and(|e| e == "md") {
                    let target_text = std::fs::read_to_string(&target).expect("a readable file");
                    if !anchors(&target_text).contains(anchor) {
                        broken.push(format!("{shown}: {dest} (no such heading)"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn no_markdown_file_refers_to_documents_outside_the_repository() {
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("a readable Markdown file");
        for outside in ["../shared", "shared/docs"] {
            assert!(
                !text.contains(outside),
                "{} mentions {outside}: the documentation must stand alone",
                file.display()
            );
        }
    }
}
