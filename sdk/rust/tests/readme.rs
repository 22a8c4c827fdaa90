// The README's example is examples/quickstart.rs (which the build compiles and the report runs);
// this keeps the two from drifting apart.

#[test]
fn readme_shows_the_quickstart_example() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{dir}/README.md")).unwrap();
    let example = std::fs::read_to_string(format!("{dir}/examples/quickstart.rs")).unwrap();
    let body = &example[example.find("use std::io").expect("the example's code starts with its imports")..];
    assert!(readme.contains(body), "README.md's example differs from examples/quickstart.rs; copy it over");
}
