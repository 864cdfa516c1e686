use proptest::prelude::*;

use super::*;

const DEFAULT: PathSettings = PathSettings {
    escaped_slashes: EscapedSlashes::Reject,
    merge_slashes: true,
};

fn settings(escaped_slashes: EscapedSlashes, merge_slashes: bool) -> PathSettings {
    PathSettings {
        escaped_slashes,
        merge_slashes,
    }
}

fn norm(path: &str) -> Result<String, PathError> {
    normalize(path, DEFAULT).map(Cow::into_owned)
}

#[test]
fn tricks_against_a_guarded_prefix_all_become_admin() {
    for trick in [
        "/%61dmin",
        "/%61%64%6D%69%6E",
        "/x/../admin",
        "/./admin",
        "//admin",
        "/x/%2e%2e/admin",
        "/x/%2E%2E/admin",
        "/%2e/admin",
        "///x/..//admin",
        "/admin/.",
        "/../admin",
    ] {
        let normal = norm(trick).unwrap_or_else(|e| panic!("{trick}: {e}"));
        assert!(
            normal == "/admin" || normal == "/admin/",
            "{trick} normalised to {normal}"
        );
    }
}

#[test]
fn dot_segments_follow_rfc_3986() {
    let cases = [
        ("/a/b/c/./../../g", "/a/g"),
        ("/mid/content=5/../6", "/mid/6"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/.", "/"),
        ("/", "/"),
        ("/a/..b/c", "/a/..b/c"),
        ("/a/.b", "/a/.b"),
        ("/a/b../c", "/a/b../c"),
    ];
    for (input, want) in cases {
        assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
    }
}

#[test]
fn escapes_are_decoded_only_when_unreserved() {
    assert_eq!(norm("/a%7Eb").as_deref(), Ok("/a~b"));
    assert_eq!(norm("/a%3fb").as_deref(), Ok("/a%3Fb"));
    assert_eq!(norm("/a%20b").as_deref(), Ok("/a%20b"));
    assert_eq!(norm("/%25").as_deref(), Ok("/%25"));
    assert_eq!(norm("/%zz"), Err(PathError::BadEscape));
    assert_eq!(norm("/%4"), Err(PathError::BadEscape));
    assert_eq!(norm("/a%00b"), Err(PathError::Nul));
}

#[test]
fn encoded_slashes_follow_the_listener_setting() {
    for path in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a\\b"] {
        assert_eq!(norm(path), Err(PathError::EscapedSlash), "{path}");
        let decoded = normalize(path, settings(EscapedSlashes::Decode, true)).map(Cow::into_owned);
        assert_eq!(decoded.as_deref(), Ok("/a/b"), "{path}");
    }
    let keep = settings(EscapedSlashes::Keep, true);
    assert_eq!(normalize("/a%2fb", keep).as_deref(), Ok("/a%2Fb"));
    assert_eq!(normalize("/a\\b", keep).as_deref(), Ok("/a%5Cb"));
    // Kept escapes are not separators: "..%2F" is one segment, not a step up.
    assert_eq!(
        normalize("/x/..%2Fadmin", keep).as_deref(),
        Ok("/x/..%2Fadmin")
    );
    // Decoded ones are, and dot segments go after decoding.
    assert_eq!(
        normalize("/x%2F..%2Fadmin", settings(EscapedSlashes::Decode, true)).as_deref(),
        Ok("/admin")
    );
}

#[test]
fn slashes_merge_only_when_asked() {
    let keep_runs = settings(EscapedSlashes::Reject, false);
    assert_eq!(normalize("//admin", keep_runs).as_deref(), Ok("//admin"));
    assert_eq!(normalize("/a//b/", keep_runs).as_deref(), Ok("/a//b/"));
    assert_eq!(norm("/a//b//").as_deref(), Ok("/a/b/"));
}

#[test]
fn a_normal_path_is_borrowed() {
    assert!(matches!(
        normalize("/api/v1/items", DEFAULT),
        Ok(Cow::Borrowed(_))
    ));
    assert!(matches!(normalize("*", DEFAULT), Ok(Cow::Borrowed("*"))));
    assert_eq!(norm("api"), Err(PathError::NotAbsolute));
}

fn any_settings() -> impl Strategy<Value = PathSettings> {
    (
        prop_oneof![
            Just(EscapedSlashes::Keep),
            Just(EscapedSlashes::Reject),
            Just(EscapedSlashes::Decode)
        ],
        any::<bool>(),
    )
        .prop_map(|(escaped_slashes, merge_slashes)| PathSettings {
            escaped_slashes,
            merge_slashes,
        })
}

/// Paths built from the pieces that matter: separators, dots, escapes, backslashes.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2F".to_owned()),
        Just("%5c".to_owned()),
        Just("\\".to_owned()),
        Just("%41".to_owned()),
        Just("%3f".to_owned()),
        "[a-z0-9~_-]{1,3}",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

proptest! {
    #[test]
    fn normalising_is_idempotent(path in tricky_path(), settings in any_settings()) {
        if let Ok(once) = normalize(&path, settings) {
            let twice = normalize(&once, settings).map(Cow::into_owned);
            prop_assert_eq!(twice.as_deref(), Ok(&*once));
        }
    }

    #[test]
    fn no_dot_segment_survives(path in tricky_path(), settings in any_settings()) {
        if let Ok(normal) = normalize(&path, settings) {
            prop_assert!(!has_dot_segment(&normal), "{} -> {}", path, normal);
            prop_assert!(normal.starts_with('/'));
            if settings.merge_slashes {
                prop_assert!(!normal.contains("//"), "{} -> {}", path, normal);
            }
        }
    }

    #[test]
    fn a_normal_path_is_unchanged(
        segments in proptest::collection::vec("[A-Za-z0-9._~-]{1,8}", 0..8),
        trailing in any::<bool>(),
        settings in any_settings(),
    ) {
        let segments: Vec<_> = segments.into_iter().filter(|s| s != "." && s != "..").collect();
        let mut path = format!("/{}", segments.join("/"));
        if trailing && !segments.is_empty() {
            path.push('/');
        }
        let normal = normalize(&path, settings);
        prop_assert!(matches!(normal, Ok(Cow::Borrowed(_))), "{}", path);
    }
}
