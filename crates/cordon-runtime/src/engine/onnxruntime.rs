//! ONNX Runtime as an engine, for the model classes where tract is slow (dense linear layers in
//! batches). Optional at run time: nothing of ONNX Runtime is linked into Cordon; the runtime loads
//! the shared library at boot, and only when a model's configuration selects it (the `ort` crate's
//! `load-dynamic`, never a build-time download).
//!
//! That library then handles plaintext models and requests, so it is code inside the trust
//! boundary, and the configuration pins it by SHA-256 (`[onnxruntime] sha256`): the configuration
//! is measured (sim) or bound by the workload data (SNP/TDX), so a release policy that pins the
//! runtime pins the library as well. The runtime reads the file once, checks the digest of those
//! bytes, copies them into a sealed anonymous memory file (`memfd`, no writes or resizes allowed
//! after sealing) and loads the library from there: the bytes checked are the bytes mapped, with no
//! window in which the file on disk could be swapped. What the library itself loads (the C and C++
//! runtime libraries of the system) is outside this check, as for any dynamically linked program;
//! in a confidential VM those come from the measured root file system.

use super::{EngineError, HostData, HostTensor};
use cordon_proto::oip::TensorMetadata;
use ort::session::{builder::GraphOptimizationLevel, Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef, ValueType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// `[onnxruntime]` in the runtime's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxRuntimeOptions {
    /// Path of ONNX Runtime's shared library (`libonnxruntime.so.1.NN.M`; the `onnxruntime`
    /// Python package ships it in `onnxruntime/capi/`). Version 1.31 or later.
    pub library: PathBuf,
    /// SHA-256 (hex) of that file: the runtime refuses to load any other bytes.
    pub sha256: String,
    /// Threads one inference may use (default 1: concurrency comes from concurrent requests).
    #[serde(default = "one")]
    pub intra_op_threads: usize,
    /// Sessions per model, i.e. inferences of one model that can run at once; each holds its own
    /// copy of the model's weights (default: the machine's cores, at most 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions_per_model: Option<usize>,
}

fn one() -> usize {
    1
}

/// Bounds on `intra_op_threads` and `sessions_per_model`: a typo in the configuration gets an
/// error, not a pool of a billion sessions.
const MAX_THREADS: usize = 256;
const MAX_SESSIONS: usize = 64;

impl OnnxRuntimeOptions {
    /// Options that pin the library at `library` by the SHA-256 of its bytes as they are now, with
    /// the default threads and sessions: what a deployer writes into the runtime's configuration.
    pub fn pinning(library: &Path) -> std::io::Result<OnnxRuntimeOptions> {
        let bytes = std::fs::read(library)?;
        Ok(OnnxRuntimeOptions {
            library: library.to_path_buf(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            intra_op_threads: 1,
            sessions_per_model: None,
        })
    }
}

/// ONNX Runtime, loaded into this process from a library whose digest was checked.
pub struct OnnxRuntimeLibrary {
    environment: ort::environment::Environment,
    sha256: [u8; 32],
    options: OnnxRuntimeOptions,
    /// The sealed memory file the library was loaded from, open for the process's lifetime.
    _image: OwnedFd,
}

impl std::fmt::Debug for OnnxRuntimeLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxRuntimeLibrary")
            .field("library", &self.options.library)
            .field("sha256", &hex::encode(self.sha256))
            .finish_non_exhaustive()
    }
}

/// Where tools and tests find ONNX Runtime's library: the file `CORDON_ONNXRUNTIME_LIB` names, else
/// what `scripts/fetch-onnxruntime.sh` put under `workspace/target/onnxruntime/`. The runtime itself
/// never searches: its configuration names the file and pins its digest.
pub fn locate_library(workspace: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CORDON_ONNXRUNTIME_LIB").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let fetched = workspace.join("target/onnxruntime/libonnxruntime.so.1.32.0");
    fetched.is_file().then_some(fetched)
}

/// A process holds one ONNX Runtime library at most: `ort` keeps the loaded library globally.
static LOADED: Mutex<Option<Arc<OnnxRuntimeLibrary>>> = Mutex::new(None);

fn library_error(reason: impl Into<String>) -> EngineError {
    EngineError::Library(reason.into())
}

impl OnnxRuntimeLibrary {
    /// Loads the library the options name, if its bytes have the pinned digest. Loading the same
    /// library again returns the one already loaded; a different one is refused.
    pub fn load(options: &OnnxRuntimeOptions) -> Result<Arc<OnnxRuntimeLibrary>, EngineError> {
        let expected: [u8; 32] = hex::decode(options.sha256.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| library_error("[onnxruntime] sha256 must be 32 bytes of hex"))?;
        if !(1..=MAX_THREADS).contains(&options.intra_op_threads)
            || options
                .sessions_per_model
                .is_some_and(|n| !(1..=MAX_SESSIONS).contains(&n))
        {
            return Err(library_error(format!(
                "[onnxruntime] intra_op_threads must be 1 to {MAX_THREADS} and sessions_per_model \
                 1 to {MAX_SESSIONS}"
            )));
        }
        let path = options.library.display();
        let bytes = std::fs::read(&options.library)
            .map_err(|e| library_error(format!("reading {path}: {e}")))?;
        let found: [u8; 32] = Sha256::digest(&bytes).into();
        if found != expected {
            return Err(library_error(format!(
                "{path}: sha256 is {}, the configuration pins {}",
                hex::encode(found),
                hex::encode(expected)
            )));
        }
        let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(library) = loaded.as_ref() {
            if library.sha256 != expected {
                return Err(library_error(format!(
                    "this process already loaded the ONNX Runtime library with sha256 {}; it \
                     cannot load another (sha256 {})",
                    hex::encode(library.sha256),
                    hex::encode(expected)
                )));
            }
            return Ok(library.clone());
        }
        let image = sealed_memory_file(&bytes)
            .map_err(|e| library_error(format!("copying {path} into a sealed memfd: {e}")))?;
        let image_path = format!("/proc/self/fd/{}", image.as_raw_fd());
        let environment = ort::init_from(&image_path)
            .map_err(|e| library_error(format!("loading {path}: {e}")))?
            .with_name("cordon")
            .with_telemetry(false)
            .build()
            .map_err(|e| library_error(format!("{path}: {e}")))?;
        environment.set_log_level(ort::logging::LogLevel::Error);
        let library = Arc::new(OnnxRuntimeLibrary {
            environment,
            sha256: found,
            options: options.clone(),
            _image: image,
        });
        *loaded = Some(library.clone());
        Ok(library)
    }

    /// SHA-256 of the loaded library.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    pub(super) fn load_model(
        &self,
        name: &str,
        bytes: &[u8],
        outputs: &[TensorMetadata],
    ) -> Result<OrtModel, EngineError> {
        let load_err = |reason: String| EngineError::Load {
            model: name.into(),
            reason,
        };
        let count = self.options.sessions_per_model.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4)
        });
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            let session = self
                .session(bytes)
                .map_err(|e| load_err(format!("onnxruntime: {e}")))?;
            sessions.push(Mutex::new(session));
        }
        let output_names: Vec<String> = outputs.iter().map(|m| m.name.clone()).collect();
        if let Some(first) = sessions.first() {
            let session = first.lock().unwrap_or_else(|p| p.into_inner());
            let found: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
            if found != output_names {
                return Err(load_err(format!(
                    "onnxruntime reports outputs {found:?}, the graph declares {output_names:?}"
                )));
            }
        }
        Ok(OrtModel {
            sessions,
            next: AtomicUsize::new(0),
            output_names,
        })
    }

    fn session(&self, bytes: &[u8]) -> Result<Session, String> {
        let s = |e: &dyn std::fmt::Display| e.to_string();
        Session::builder(&self.environment)
            .map_err(|e| s(&e))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| s(&e))?
            .with_intra_threads(self.options.intra_op_threads)
            .map_err(|e| s(&e))?
            .with_inter_threads(1)
            .map_err(|e| s(&e))?
            .commit_from_memory(bytes)
            .map_err(|e| s(&e))
    }
}

/// The library's bytes in an anonymous memory file, sealed against any change.
fn sealed_memory_file(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    let fd = memfd_create(
        "cordon-onnxruntime",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    let fd = OwnedFd::from(file);
    fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )?;
    Ok(fd)
}

/// One model on ONNX Runtime: a small pool of sessions (a session runs one inference at a time).
pub(super) struct OrtModel {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    output_names: Vec<String>,
}

impl OrtModel {
    /// A free session if there is one, else waits for the next in turn.
    fn acquire(&self) -> MutexGuard<'_, Session> {
        for s in &self.sessions {
            if let Ok(guard) = s.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        self.sessions[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn run(
        &self,
        metadata: &[TensorMetadata],
        inputs: &[HostTensor],
    ) -> Result<Vec<HostTensor>, EngineError> {
        let values = metadata
            .iter()
            .zip(inputs)
            .map(|(m, t)| Ok((Cow::Borrowed(m.name.as_str()), to_ort(t)?)))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let mut session = self.acquire();
        let outputs = session
            .run(values)
            .map_err(|e| EngineError::Run(format!("onnxruntime: {e}")))?;
        self.output_names
            .iter()
            .map(|name| {
                let value = outputs.get(name).ok_or_else(|| {
                    EngineError::Run(format!("onnxruntime returned no output {name:?}"))
                })?;
                from_ort(name, value)
            })
            .collect()
    }
}

fn run_err(e: ort::Error) -> EngineError {
    EngineError::Run(format!("onnxruntime: {e}"))
}

fn to_ort(t: &HostTensor) -> Result<SessionInputValue<'_>, EngineError> {
    fn view<'a, T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static>(
        shape: &[usize],
        data: &'a [T],
    ) -> Result<SessionInputValue<'a>, EngineError> {
        Ok(TensorRef::from_array_view((shape.to_vec(), data))
            .map_err(run_err)?
            .into())
    }
    let shape = &t.shape;
    match &t.data {
        HostData::F32(d) => view(shape, d),
        HostData::F64(d) => view(shape, d),
        HostData::F16(d) => view(shape, d),
        HostData::I64(d) => view(shape, d),
        HostData::I32(d) => view(shape, d),
        HostData::I16(d) => view(shape, d),
        HostData::I8(d) => view(shape, d),
        HostData::U64(d) => view(shape, d),
        HostData::U32(d) => view(shape, d),
        HostData::U16(d) => view(shape, d),
        HostData::U8(d) => view(shape, d),
        HostData::Bool(d) => view(shape, d),
        HostData::Bytes(d) => Ok(Tensor::from_string_array((shape.to_vec(), &d[..]))
            .map_err(run_err)?
            .into_dyn()
            .into()),
    }
}

fn from_ort(name: &str, value: &DynValue) -> Result<HostTensor, EngineError> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(EngineError::Run(format!(
            "onnxruntime: output {name:?} is not a tensor"
        )));
    };
    fn elements<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> Result<(Vec<usize>, Vec<T>), EngineError> {
        let (shape, data) = value.try_extract_tensor::<T>().map_err(run_err)?;
        Ok((dims(shape), data.to_vec()))
    }
    fn dims(shape: &[i64]) -> Vec<usize> {
        shape.iter().map(|&d| d.max(0) as usize).collect()
    }
    let (shape, data) = match ty {
        TensorElementType::Float32 => elements(value).map(|(s, d)| (s, HostData::F32(d)))?,
        TensorElementType::Float64 => elements(value).map(|(s, d)| (s, HostData::F64(d)))?,
        TensorElementType::Float16 => elements(value).map(|(s, d)| (s, HostData::F16(d)))?,
        TensorElementType::Int64 => elements(value).map(|(s, d)| (s, HostData::I64(d)))?,
        TensorElementType::Int32 => elements(value).map(|(s, d)| (s, HostData::I32(d)))?,
        TensorElementType::Int16 => elements(value).map(|(s, d)| (s, HostData::I16(d)))?,
        TensorElementType::Int8 => elements(value).map(|(s, d)| (s, HostData::I8(d)))?,
        TensorElementType::Uint64 => elements(value).map(|(s, d)| (s, HostData::U64(d)))?,
        TensorElementType::Uint32 => elements(value).map(|(s, d)| (s, HostData::U32(d)))?,
        TensorElementType::Uint16 => elements(value).map(|(s, d)| (s, HostData::U16(d)))?,
        TensorElementType::Uint8 => elements(value).map(|(s, d)| (s, HostData::U8(d)))?,
        TensorElementType::Bool => elements(value).map(|(s, d)| (s, HostData::Bool(d)))?,
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings().map_err(run_err)?;
            (dims(shape), HostData::Bytes(strings))
        }
        other => {
            return Err(EngineError::Run(format!(
            "onnxruntime: output {name:?} has datatype {other:?}, which the protocol cannot carry"
        )))
        }
    };
    Ok(HostTensor { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, OnnxModel};
    use cordon_proto::oip::InferRequest;
    use serde_json::Value;
    use std::path::{Path, PathBuf};

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The library the tests run on; its absence is a failure, not a skip.
    fn options() -> OnnxRuntimeOptions {
        let library = locate_library(&workspace()).unwrap_or_else(|| {
            panic!(
                "ONNX Runtime's library is needed by these tests: run scripts/fetch-onnxruntime.sh \
                 (or set CORDON_ONNXRUNTIME_LIB)"
            )
        });
        OnnxRuntimeOptions {
            sessions_per_model: Some(2),
            ..OnnxRuntimeOptions::pinning(&library).unwrap()
        }
    }

    fn library() -> Arc<OnnxRuntimeLibrary> {
        OnnxRuntimeLibrary::load(&options()).unwrap()
    }

    fn read_json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1.0)
    }

    /// Differences between an engine's outputs and the reference's (labels exact, numbers within
    /// 1e-5 relative).
    fn differences(name: &str, got: &[cordon_proto::oip::Tensor], expected: &Value) -> Vec<String> {
        let expected = expected["outputs"].as_array().unwrap();
        let mut errors = Vec::new();
        if got.len() != expected.len() {
            return vec![format!(
                "{name}: {} outputs, expected {}",
                got.len(),
                expected.len()
            )];
        }
        for (g, w) in got.iter().zip(expected) {
            let want = w["data"].as_array().unwrap();
            let have = g.data.as_array().unwrap();
            if have.len() != want.len() || g.name != w["name"].as_str().unwrap() {
                errors.push(format!("{name}.{}: shape or name differs", g.name));
                continue;
            }
            for (i, (h, x)) in have.iter().zip(want).enumerate() {
                let same = match (h.as_f64(), x.as_f64()) {
                    (Some(a), Some(b)) if g.datatype.starts_with("FP") => close(a, b),
                    _ => h == x,
                };
                if !same {
                    errors.push(format!("{name}.{}[{i}]: {h}, expected {x}", g.name));
                }
            }
        }
        errors.truncate(5);
        errors
    }

    #[test]
    fn a_library_that_is_not_the_pinned_one_is_refused() {
        let good = options();
        let wrong = OnnxRuntimeOptions {
            sha256: "00".repeat(32),
            ..good.clone()
        };
        let err = OnnxRuntimeLibrary::load(&wrong).unwrap_err().to_string();
        assert!(
            err.contains(&good.sha256) && err.contains(&"00".repeat(32)),
            "{err}"
        );
        let missing = OnnxRuntimeOptions {
            library: workspace().join("target/no-such-libonnxruntime.so"),
            ..good.clone()
        };
        let err = OnnxRuntimeLibrary::load(&missing).unwrap_err().to_string();
        assert!(err.contains("no-such-libonnxruntime.so"), "{err}");
        for sessions in [0, 1_000_000_000] {
            let absurd = OnnxRuntimeOptions {
                sessions_per_model: Some(sessions),
                ..good.clone()
            };
            let err = OnnxRuntimeLibrary::load(&absurd).unwrap_err().to_string();
            assert!(err.contains("sessions_per_model"), "{err}");
        }
        let malformed = OnnxRuntimeOptions {
            sha256: "not hex".into(),
            ..good
        };
        assert!(matches!(
            OnnxRuntimeLibrary::load(&malformed),
            Err(EngineError::Library(_))
        ));
    }

    #[test]
    fn the_same_library_loads_once_per_process() {
        let a = library();
        let b = library();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(hex::encode(a.sha256()), options().sha256);
    }

    /// The breast-cancer LR and MLP on both engines: the same labels as scikit-learn and ONNX
    /// Runtime's recorded outputs, the same probabilities within 1e-5.
    #[test]
    fn linear_models_agree_on_both_engines() {
        let lib = library();
        let rows: Value = read_json(&workspace().join("models/reference/breast_cancer_test.json"));
        let rows = rows["inputs"].as_array().unwrap();
        let data: Vec<Value> = rows
            .iter()
            .flat_map(|r| r.as_array().unwrap().clone())
            .collect();
        let request: InferRequest = serde_json::from_value(serde_json::json!({
            "inputs": [{"name": "input", "shape": [rows.len(), 30], "datatype": "FP32", "data": data}]
        }))
        .unwrap();
        for name in ["breast_cancer_lr", "breast_cancer_mlp"] {
            let bytes = std::fs::read(workspace().join(format!("models/{name}.onnx"))).unwrap();
            let ort = OnnxModel::load_on(name, "1", &bytes, Engine::OnnxRuntime(&lib)).unwrap();
            let tract = OnnxModel::load(name, "1", &bytes).unwrap();
            assert_eq!(ort.metadata().inputs, tract.metadata().inputs);
            assert_eq!(ort.metadata().outputs, tract.metadata().outputs);
            assert_eq!(ort.metadata().platform, "onnxruntime_onnx");
            let a = ort.infer(&request).unwrap();
            let b = tract.infer(&request).unwrap();
            let expected =
                read_json(&workspace().join(format!("models/reference/{name}.expected.json")));
            assert_eq!(a.outputs[0].data, b.outputs[0].data, "{name}: labels");
            assert_eq!(
                a.outputs[0].data,
                serde_json::json!(expected["onnxruntime_labels"]),
                "{name}"
            );
            let probs = a.outputs[1].data.as_array().unwrap();
            let want: Vec<&Value> = expected["onnxruntime_probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap())
                .collect();
            assert_eq!(probs.len(), want.len());
            for (i, (p, w)) in probs.iter().zip(want).enumerate() {
                assert!(
                    close(p.as_f64().unwrap(), w.as_f64().unwrap()),
                    "{name} probability {i}: {p} vs {w}"
                );
            }
        }
    }

    /// Every model of the tree zoo and the fraud model on ONNX Runtime through the runtime's
    /// engine: its recorded outputs come back. Models whose output is ZipMap's sequence of maps
    /// are refused at load with an error that says so.
    #[test]
    fn tree_zoo_on_the_onnxruntime_engine() {
        let lib = library();
        let mut dirs: Vec<(PathBuf, String)> = std::fs::read_dir(workspace().join("models/trees"))
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name()?.to_str()?.strip_suffix(".onnx")?.to_string();
                Some((workspace().join("models/trees"), name))
            })
            .collect();
        dirs.push((workspace().join("models/fraud"), "fraud_gbdt".into()));
        dirs.sort();
        let (mut served, mut refused, mut failures) = (0, 0, Vec::new());
        for (dir, name) in &dirs {
            let bytes = std::fs::read(dir.join(format!("{name}.onnx"))).unwrap();
            let request: InferRequest =
                serde_json::from_value(read_json(&dir.join(format!("{name}.input.json")))).unwrap();
            let expected = read_json(&dir.join(format!("{name}.expected.json")));
            match OnnxModel::load_on(name, "1", &bytes, Engine::OnnxRuntime(&lib)) {
                Ok(model) => match model.infer(&request) {
                    Ok(r) => failures.extend(differences(name, &r.outputs, &expected)),
                    Err(e) => failures.push(format!("{name}: {e}")),
                },
                Err(e) if e.to_string().contains("ZipMap") => refused += 1,
                Err(e) => failures.push(format!("{name}: {e}")),
            }
            served += 1;
        }
        let zipmaps = dirs.iter().filter(|(_, n)| n.contains("zipmap")).count();
        assert!(served >= 60, "{served} models");
        assert_eq!(refused, zipmaps, "only the ZipMap models are refused");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn zipmap_outputs_are_refused_with_a_reason() {
        let lib = library();
        let bytes =
            std::fs::read(workspace().join("models/trees/wine_rf_clf_zipmap.onnx")).unwrap();
        let err = OnnxModel::load_on("z", "1", &bytes, Engine::OnnxRuntime(&lib))
            .err()
            .unwrap();
        assert!(matches!(err, EngineError::Load { .. }));
        assert!(err.to_string().contains("ZipMap"), "{err}");
        // tract serves it (as the tensor the plan computes).
        assert!(OnnxModel::load("z", "1", &bytes).is_ok());
    }

    #[test]
    fn requests_are_checked_before_onnxruntime_sees_them_and_sessions_run_concurrently() {
        let lib = library();
        let bytes = std::fs::read(workspace().join("models/breast_cancer_mlp.onnx")).unwrap();
        let model =
            Arc::new(OnnxModel::load_on("mlp", "1", &bytes, Engine::OnnxRuntime(&lib)).unwrap());
        let request = |shape: Value, data: Value, datatype: &str| -> InferRequest {
            serde_json::from_value(serde_json::json!({
                "inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]
            }))
            .unwrap()
        };
        let wrong_shape = request(
            serde_json::json!([1, 29]),
            serde_json::json!(vec![0.0; 29]),
            "FP32",
        );
        assert!(matches!(
            model.infer(&wrong_shape),
            Err(EngineError::Shape { .. })
        ));
        let wrong_type = request(
            serde_json::json!([1, 30]),
            serde_json::json!(vec![0; 30]),
            "INT64",
        );
        assert!(matches!(
            model.infer(&wrong_type),
            Err(EngineError::Datatype { .. })
        ));
        // Four threads on two sessions: every answer is the one a lone call gives.
        let one = request(
            serde_json::json!([1, 30]),
            serde_json::json!(vec![1.5; 30]),
            "FP32",
        );
        let alone = model.infer(&one).unwrap().outputs;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (model, one) = (model.clone(), one.clone());
                std::thread::spawn(move || {
                    (0..200)
                        .map(|_| model.infer(&one).unwrap().outputs)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for t in threads {
            for outputs in t.join().unwrap() {
                assert_eq!(outputs, alone);
            }
        }
    }
}
