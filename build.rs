// refinery's embed_migrations! reads the folder at compile time; without this a new
// migration file would not be noticed until a clean build.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
