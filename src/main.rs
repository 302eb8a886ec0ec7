fn main() {
    eprintln!("vit: the command line arrives with the training loop");
    std::process::exit(2);
}
