//! What a training step keeps for backward, block by block, and what it recomputes: the tape's
//! memory policy (`autograd::memory`) as it applies to a ViT.
//!
//! ```text
//! cargo run --release --example memory                         # ViT-Ti/4 on 32x32, batch 128
//! cargo run --release --example memory -- --plain              # the plain op-by-op path
//! cargo run --release --example memory -- --batch 8 --dropout 0.1
//! ```

use vit::nn::{ParamStore, ViTConfig, VisionTransformer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let batch = value("--batch").map_or(Ok(128), |v| v.parse()).unwrap_or_else(|e| fail(&format!("--batch: {e}")));
    let dropout =
        value("--dropout").map_or(Ok(0.0), |v| v.parse()).unwrap_or_else(|e| fail(&format!("--dropout: {e}")));
    let fused = !args.iter().any(|a| a == "--plain");
    let mut c = ViTConfig::tiny(4, 32);
    (c.num_classes, c.dropout) = (10, dropout);
    let (model, store): (VisionTransformer, ParamStore) =
        VisionTransformer::init(&c, 0).unwrap_or_else(|e| fail(&e.to_string()));
    print!("{}", model.memory_report(&store, batch, fused));
}

fn fail(msg: &str) -> ! {
    eprintln!("memory: {msg}\nusage: memory [--batch N] [--dropout P] [--plain]");
    std::process::exit(2)
}
