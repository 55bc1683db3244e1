//! Where a CERES task runs its network: the `device` param of `ceres_train`, `ceres_evaluate`
//! and `ceres_classify`. `cpu` is the default; `cuda` or `cuda:N` (the GPU of ordinal N) needs
//! a `nearby` built with the `cuda` feature (`cargo build --release --features cuda`). On the
//! CPU the network's convolutions run as the im2col kernels of `conv`; on a GPU as candle's
//! `conv2d` (the same network to float rounding, see `model::Ceres::forward_with`).

use candle_core::Device;

/// The device a `device` param names: `None` for the CPU, `Some(N)` for the GPU of ordinal N.
pub fn parse(spec: &str) -> Result<Option<usize>, String> {
    match spec.trim() {
        "" | "cpu" => Ok(None),
        "cuda" => Ok(Some(0)),
        s => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                format!("`{s}`: expected `cpu`, `cuda` or `cuda:N` (N a GPU's ordinal)")
            }),
    }
}

/// Opens the device a `device` param names (see [`parse`]).
pub fn open(spec: &str) -> Result<Device, String> {
    match parse(spec)? {
        None => Ok(Device::Cpu),
        Some(n) => cuda(n),
    }
}

#[cfg(feature = "cuda")]
fn cuda(n: usize) -> Result<Device, String> {
    Device::new_cuda(n).map_err(|e| format!("device cuda:{n}: {e}"))
}

#[cfg(not(feature = "cuda"))]
fn cuda(n: usize) -> Result<Device, String> {
    Err(format!(
        "device cuda:{n}: this nearby was built without CUDA (build it with `--features cuda`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_bad_ones_say_what_was_expected() {
        assert_eq!(parse("cpu"), Ok(None));
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("cuda"), Ok(Some(0)));
        assert_eq!(parse("cuda:1"), Ok(Some(1)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU"] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.contains("expected `cpu`, `cuda` or `cuda:N`"),
                "{bad}: {e}"
            );
        }
        assert!(matches!(open("cpu"), Ok(Device::Cpu)));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_gpu_without_the_cuda_feature_is_a_clear_error() {
        let e = open("cuda:0").unwrap_err();
        assert!(e.contains("built without CUDA"), "{e}");
    }
}
