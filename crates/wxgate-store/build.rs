// The migrations are embedded by `sqlx::migrate!`; a new file in migrations/ must rebuild the
// crate, which Cargo does not know without this.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
