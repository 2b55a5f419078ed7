fn main() {
    println!("{}", groupwise::x());
}
