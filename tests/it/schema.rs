//! `schema.graphql` is generated from the code; it must not drift.

#[test]
fn committed_schema_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let committed = std::fs::read_to_string(&path).expect("schema.graphql is committed");
    let generated = codekraft::graphql::schema_sdl();
    assert!(
        committed == generated,
        "schema.graphql is out of date: run `cargo run -- print-schema > schema.graphql`"
    );
}
