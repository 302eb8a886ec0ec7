//! The CUDA kernel sources, one file per family, and how they become one program.
//!
//! Every `.cu` file here is compiled twice from the same text: by NVRTC for a GPU (at run time,
//! for the device's compute capability; and in CI for sm_80 and sm_90, where any error or
//! warning fails the build) and by the host C++ compiler for the emulator the tests run on.
//! A file holds `__device__` templates with the math and, at its end, the `extern "C"` kernels
//! instantiating them for `float` (`_f32`) and `double` (`_f64`) through `KERNEL(name)`.
//!
//! The kernel names are read from the sources themselves ([`kernel_names`]), and the op codes
//! the elementwise kernels switch on are generated from the Rust enums below, so neither list
//! exists twice.

/// The program's files, in the order they are concatenated (later files use earlier ones).
pub const FILES: &[(&str, &str)] = &[
    ("common.cuh", include_str!("common.cuh")),
    ("elementwise.cu", include_str!("elementwise.cu")),
    ("reduce.cu", include_str!("reduce.cu")),
    ("softmax.cu", include_str!("softmax.cu")),
    ("layer_norm.cu", include_str!("layer_norm.cu")),
    ("gelu.cu", include_str!("gelu.cu")),
    ("linear.cu", include_str!("linear.cu")),
    ("loss.cu", include_str!("loss.cu")),
    ("dropout.cu", include_str!("dropout.cu")),
    ("optim.cu", include_str!("optim.cu")),
    ("pool.cu", include_str!("pool.cu")),
    ("resnet.cu", include_str!("resnet.cu")),
];

const PRELUDE_NVRTC: &str = include_str!("prelude_nvrtc.cuh");

/// `y = f(x; p)` in `unary_*` kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum UnaryOp {
    /// `-x`
    Neg = 0,
    /// `e^x`
    Exp,
    /// `ln x`
    Log,
    /// `sqrt x`
    Sqrt,
    /// `tanh x`
    Tanh,
    /// `x^p`
    Pow,
    /// `x + p`
    AddScalar,
    /// `x * p`
    MulScalar,
    /// `max(x, 0)` (0 for NaN, as the CPU's `if x > 0`)
    Relu,
}

/// `y = f(a, b; p)` in `binary_*` and `broadcast_*` kernels; `a` is usually an upstream
/// gradient and `b` a saved value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum BinaryOp {
    /// `a + b`
    Add = 0,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `-a / b` (division's gradient for its divisor, from `a = g y`)
    NegDiv,
    /// `0.5 a / b` (sqrt's gradient from its output `b`)
    SqrtBack,
    /// `a (1 - b^2)` (tanh's gradient from its output `b`)
    TanhBack,
    /// `a p b^(p-1)` (the gradient of `b^p`)
    PowBack,
    /// `a [b > 0]` (ReLU's gradient from its input `b`)
    ReluBack,
}

const UNARY: &[(&str, UnaryOp)] = &[
    ("U_NEG", UnaryOp::Neg),
    ("U_EXP", UnaryOp::Exp),
    ("U_LOG", UnaryOp::Log),
    ("U_SQRT", UnaryOp::Sqrt),
    ("U_TANH", UnaryOp::Tanh),
    ("U_POW", UnaryOp::Pow),
    ("U_ADD_SCALAR", UnaryOp::AddScalar),
    ("U_MUL_SCALAR", UnaryOp::MulScalar),
    ("U_RELU", UnaryOp::Relu),
];

const BINARY: &[(&str, BinaryOp)] = &[
    ("B_ADD", BinaryOp::Add),
    ("B_SUB", BinaryOp::Sub),
    ("B_MUL", BinaryOp::Mul),
    ("B_DIV", BinaryOp::Div),
    ("B_NEG_DIV", BinaryOp::NegDiv),
    ("B_SQRT_BACK", BinaryOp::SqrtBack),
    ("B_TANH_BACK", BinaryOp::TanhBack),
    ("B_POW_BACK", BinaryOp::PowBack),
    ("B_RELU_BACK", BinaryOp::ReluBack),
];

/// The GELU form codes (`kind` arguments), in the order of `ops::gelu::GeluKind`.
pub const GELU_ERF: i32 = 0;
/// See [`GELU_ERF`].
pub const GELU_TANH: i32 = 1;

/// The `#define`s of every op code.
fn op_codes() -> String {
    let mut s = String::from("// Op codes, generated from the Rust enums in cuda/kernels/mod.rs.\n");
    for (name, op) in UNARY {
        s.push_str(&format!("#define {name} {}\n", *op as i32));
    }
    for (name, op) in BINARY {
        s.push_str(&format!("#define {name} {}\n", *op as i32));
    }
    s.push_str(&format!("#define GELU_ERF {GELU_ERF}\n#define GELU_TANH {GELU_TANH}\n"));
    s
}

/// Who compiles the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// NVRTC, for a GPU.
    Nvrtc,
    /// The host C++ compiler, for the emulator (`prelude` is its runtime header).
    Emulator,
}

/// The whole program for `target`: prelude, op codes, then every file with `#line` markers so
/// that compiler messages name the file and line they are about.
pub fn program(target: Target, emulator_prelude: &str) -> String {
    let mut s = String::new();
    s.push_str(match target {
        Target::Nvrtc => PRELUDE_NVRTC,
        Target::Emulator => emulator_prelude,
    });
    s.push('\n');
    s.push_str(&op_codes());
    for (name, text) in FILES {
        s.push_str(&format!("#line 1 \"{name}\"\n"));
        s.push_str(text);
        s.push('\n');
    }
    if target == Target::Emulator {
        for k in kernel_names() {
            s.push_str(&format!("EMU_EXPORT({k})\n"));
        }
    }
    s
}

/// Every kernel the sources define, read from their `KERNEL(name)` lines: `KERNEL(x_##S)`
/// inside an instantiation macro stands for `x_f32` and `x_f64`.
pub fn kernel_names() -> Vec<String> {
    let mut names = Vec::new();
    for (_, text) in FILES {
        let mut rest = *text;
        while let Some(at) = rest.find("KERNEL(") {
            rest = &rest[at + "KERNEL(".len()..];
            let Some(end) = rest.find(')') else { break };
            let name = rest[..end].trim();
            // `#define KERNEL(name)` in a comment or prelude is not a kernel.
            if name == "name" || name.is_empty() {
                continue;
            }
            match name.strip_suffix("##S") {
                Some(base) => {
                    names.push(format!("{base}f32"));
                    names.push(format!("{base}f64"));
                }
                None => names.push(name.to_string()),
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_cover_both_types_and_are_unique() {
        let names = kernel_names();
        assert!(names.contains(&"softmax_rows_f32".to_string()));
        assert!(names.contains(&"softmax_rows_f64".to_string()));
        assert!(names.contains(&"sum_partials".to_string()));
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate kernel names");
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')), "{names:?}");
    }

    #[test]
    fn op_codes_are_distinct() {
        let mut u: Vec<i32> = UNARY.iter().map(|(_, o)| *o as i32).collect();
        let mut b: Vec<i32> = BINARY.iter().map(|(_, o)| *o as i32).collect();
        u.dedup();
        b.dedup();
        assert_eq!(u.len(), UNARY.len());
        assert_eq!(b.len(), BINARY.len());
        assert!(op_codes().contains("#define B_POW_BACK 7"));
    }
}
