//! `config/README.md` is tested as shipped: its examples validate and its error listing is
//! what the validator prints.

use std::path::Path;

use crate::config::parse;

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/README.md"));

/// The fenced blocks of `lang` after `heading`, until the next `## ` heading.
fn blocks(heading: &str, lang: &str) -> Vec<String> {
    let section = README.split_once(heading).map_or("", |(_, rest)| rest);
    let section = section.split("\n## ").next().unwrap_or_default();
    let fence = format!("```{lang}\n");
    section
        .split(&fence)
        .skip(1)
        .filter_map(|block| block.split_once("```").map(|(body, _)| body.to_owned()))
        .collect()
}

#[test]
fn readme_examples_validate() {
    let examples = blocks("## Examples", "toml");
    assert_eq!(
        examples.len(),
        4,
        "expected one example per kind of service"
    );
    // The HTTPS example names the reader's own files; the shipped example pair stands in.
    let origin = Path::new(super::EXAMPLE);
    for example in examples {
        let text = example.replace("certs/site.", "certs/example.");
        if let Err(errors) = parse(&text, origin) {
            panic!("README example does not validate:\n{errors}\n---\n{example}");
        }
    }
}

#[test]
fn readme_announce_example_validates() {
    let examples = blocks("## `[announce]`", "toml");
    assert_eq!(examples.len(), 1, "the [announce] section lost its example");
    match parse(&examples[0], Path::new("config/node.toml")) {
        Ok(loaded) => assert!(loaded.config.announce.is_some()),
        Err(errors) => panic!("README [announce] example does not validate:\n{errors}"),
    }
}

#[test]
fn readme_error_listing_is_what_check_config_prints() {
    let file = blocks("## Errors", "toml");
    let output = blocks("## Errors", "text");
    let (Some(file), Some(output)) = (file.first(), output.first()) else {
        panic!("the Errors section lost its example");
    };
    let Err(errors) = parse(file, Path::new("config/bad.toml")) else {
        panic!("the Errors example validates");
    };
    let printed: Vec<String> = errors
        .diagnostics
        .iter()
        .map(|d| format!("error: {d}"))
        .collect();
    let shown: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(printed, shown);
}
