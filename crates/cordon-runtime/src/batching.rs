//! Dynamic batching: requests to one model that arrive within `max_delay` of the first are
//! evaluated together, as one batch of at most `max_rows` rows, and each gets its own rows back.
//!
//! Only requests whose every input has the same name, datatype and trailing dimensions are merged;
//! inputs are concatenated along the first (batch) dimension. Every output of the merged run must
//! have the total row count as its first dimension, or the batch is evaluated request by request
//! instead, so a model whose outputs do not follow its rows never mixes clients' answers.

use crate::engine::{EngineError, OnnxModel};
use cordon_proto::oip::{InferRequest, InferResponse, Tensor};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How requests are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Most rows in one evaluation. A request with more rows than this is not batched.
    pub max_rows: usize,
    /// Longest a request waits for others to join its batch. Zero: no waiting; a batch is what
    /// queued up while the previous one ran, so batching adds no latency.
    pub max_delay: Duration,
}

type Reply = oneshot::Sender<Result<InferResponse, EngineError>>;

/// Called with the row count of every evaluation (for metrics).
pub type OnBatch = Arc<dyn Fn(usize) + Send + Sync>;

struct Job {
    request: InferRequest,
    rows: usize,
    reply: Reply,
}

/// The batcher of one model: a task that gathers requests and evaluates them together.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    max_rows: usize,
}

impl Batcher {
    /// Starts the batching task on the current tokio runtime. `queue` bounds waiting requests
    /// (the runtime's admission queue bounds them first).
    pub fn spawn(
        model: Arc<OnnxModel>,
        options: BatchOptions,
        queue: usize,
        on_batch: OnBatch,
    ) -> Batcher {
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(run(model, options, rx, on_batch));
        Batcher {
            tx,
            max_rows: options.max_rows,
        }
    }

    /// The rows of `request` if it can be batched: every input has the same first dimension.
    pub fn batchable_rows(&self, request: &InferRequest) -> Option<usize> {
        let rows = request.inputs.first()?.shape.first().copied()?;
        let ok = rows > 0
            && (rows as usize) <= self.max_rows
            && request
                .inputs
                .iter()
                .all(|t| t.shape.first() == Some(&rows));
        ok.then_some(rows as usize)
    }

    /// Evaluates `request` (with `rows` rows) in a batch.
    pub async fn infer(
        &self,
        request: InferRequest,
        rows: usize,
    ) -> Result<InferResponse, EngineError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request,
            rows,
            reply,
        };
        self.tx
            .send(job)
            .await
            .map_err(|_| EngineError::Run("batcher stopped".into()))?;
        answer
            .await
            .map_err(|_| EngineError::Run("batch evaluation failed".into()))?
    }
}

async fn run(
    model: Arc<OnnxModel>,
    options: BatchOptions,
    mut rx: mpsc::Receiver<Job>,
    on_batch: OnBatch,
) {
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let deadline = tokio::time::Instant::now() + options.max_delay;
        let mut rows = first.rows;
        let mut jobs = vec![first];
        while rows < options.max_rows {
            // What is queued already joins at once; only then wait, up to the deadline (tokio's
            // timer has millisecond granularity, so a non-zero delay waits about 1 ms at least).
            let j = match rx.try_recv() {
                Ok(j) => j,
                Err(_) if options.max_delay.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(j)) => j,
                    Ok(None) | Err(_) => break,
                },
            };
            if rows + j.rows <= options.max_rows && compatible(&jobs[0], &j) {
                rows += j.rows;
                jobs.push(j);
            } else {
                next = Some(j);
                break;
            }
        }
        on_batch(rows);
        let model = model.clone();
        // Evaluation is CPU work: off the async workers. One batch at a time per model.
        let _ = tokio::task::spawn_blocking(move || evaluate(&model, jobs)).await;
    }
}

/// Same inputs (names, datatypes, trailing dimensions), in the same order.
fn compatible(a: &Job, b: &Job) -> bool {
    a.request.inputs.len() == b.request.inputs.len()
        && a.request
            .inputs
            .iter()
            .zip(&b.request.inputs)
            .all(|(x, y)| {
                x.name == y.name && x.datatype == y.datatype && x.shape.get(1..) == y.shape.get(1..)
            })
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

fn evaluate(model: &OnnxModel, jobs: Vec<Job>) {
    if jobs.len() == 1 {
        for j in jobs {
            let _ = j.reply.send(model.infer(&j.request));
        }
        return;
    }
    match evaluate_merged(model, &jobs) {
        Some(answers) => {
            for (j, a) in jobs.into_iter().zip(answers) {
                let _ = j.reply.send(a);
            }
        }
        // Not splittable by rows (or the merged run failed): each request on its own, so one
        // client's bad data cannot fail another's request.
        None => {
            for j in jobs {
                let _ = j.reply.send(model.infer(&j.request));
            }
        }
    }
}

fn evaluate_merged(
    model: &OnnxModel,
    jobs: &[Job],
) -> Option<Vec<Result<InferResponse, EngineError>>> {
    // A graph that mixes rows (a sequence model, a reduction or softmax over the batch, anything on
    // tract or ONNX Runtime, which the runtime cannot inspect) would hand one client rows computed
    // from another's: only plans that compute each row from that row alone are merged.
    if !model.rows_independent() {
        return None;
    }
    let total: usize = jobs.iter().map(|j| j.rows).sum();
    // Only outputs the graph declares per sample (a symbolic first dimension) are split by rows:
    // a fixed-size output that happens to have as many rows as the batch belongs to no one client.
    if !model.outputs_per_sample() {
        return None;
    }
    let first = &jobs[0].request;
    let mut inputs = Vec::with_capacity(first.inputs.len());
    for (i, t) in first.inputs.iter().enumerate() {
        let mut data = Vec::new();
        for j in jobs {
            flatten(&j.request.inputs[i].data, &mut data);
        }
        let mut shape = t.shape.clone();
        shape[0] = total as i64;
        inputs.push(Tensor {
            name: t.name.clone(),
            shape,
            datatype: t.datatype.clone(),
            data: Value::Array(data),
            parameters: None,
        });
    }
    let merged = model
        .infer(&InferRequest {
            id: None,
            inputs,
            outputs: None,
            parameters: None,
        })
        .ok()?;
    // Every output must be split by rows.
    let mut per_output = Vec::with_capacity(merged.outputs.len());
    for out in &merged.outputs {
        if out.shape.first() != Some(&(total as i64)) {
            return None;
        }
        let row_len: usize = out.shape[1..].iter().map(|&d| d.max(0) as usize).product();
        let mut flat = Vec::new();
        flatten(&out.data, &mut flat);
        if flat.len() != total * row_len {
            return None;
        }
        per_output.push((out, row_len, flat));
    }
    let mut answers = Vec::with_capacity(jobs.len());
    let mut start = 0;
    for j in jobs {
        let wanted: Option<Vec<&str>> = j
            .request
            .outputs
            .as_ref()
            .map(|o| o.iter().map(|o| o.name.as_str()).collect());
        let mut outputs = Vec::new();
        for (out, row_len, flat) in &per_output {
            if wanted
                .as_ref()
                .is_some_and(|w| !w.contains(&out.name.as_str()))
            {
                continue;
            }
            let mut shape = out.shape.clone();
            shape[0] = j.rows as i64;
            outputs.push(Tensor {
                name: out.name.clone(),
                shape,
                datatype: out.datatype.clone(),
                data: Value::Array(flat[start * row_len..(start + j.rows) * row_len].to_vec()),
                parameters: None,
            });
        }
        // A requested output the model lacks is the request's error, as unbatched.
        if let Some(w) = &wanted {
            if let Some(missing) = w
                .iter()
                .find(|n| !merged.outputs.iter().any(|o| o.name == **n))
            {
                answers.push(Err(EngineError::UnknownOutput(missing.to_string())));
                start += j.rows;
                continue;
            }
        }
        answers.push(Ok(InferResponse {
            model_name: merged.model_name.clone(),
            model_version: merged.model_version.clone(),
            id: j.request.id.clone(),
            outputs,
        }));
        start += j.rows;
    }
    Some(answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MLP: &[u8] = include_bytes!("../../../models/breast_cancer_mlp.onnx");
    const TEST_SET: &str = include_str!("../../../models/reference/breast_cancer_test.json");

    fn request(first: usize, n: usize) -> InferRequest {
        let v: Value = serde_json::from_str(TEST_SET).unwrap();
        let rows: Vec<Value> = v["inputs"].as_array().unwrap()[first..first + n].to_vec();
        InferRequest {
            id: Some(format!("r{first}")),
            inputs: vec![Tensor {
                name: "input".into(),
                shape: vec![n as i64, 30],
                datatype: "FP32".into(),
                // Nested rows: flattened on merge, as the engine does.
                data: json!(rows),
                parameters: None,
            }],
            outputs: None,
            parameters: None,
        }
    }

    /// An output the graph declares with a fixed first dimension belongs to no one request, even
    /// when the merged batch has that many rows: such a batch is not split (each request is then
    /// evaluated alone).
    #[test]
    fn outputs_of_fixed_size_are_not_split_between_requests() {
        use prost::Message;
        use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
        use tract_onnx::prelude::Framework;
        let jobs = |n: usize| -> Vec<Job> {
            (0..n)
                .map(|i| Job {
                    request: request(i, 1),
                    rows: 1,
                    reply: oneshot::channel().0,
                })
                .collect()
        };
        let model = OnnxModel::load("mlp", "1", MLP).unwrap();
        assert!(evaluate_merged(&model, &jobs(2)).is_some());
        let mut proto = cordon_trees::onnx_parser()
            .proto_model_for_read(&mut &MLP[..])
            .unwrap();
        let graph = proto.graph.as_mut().unwrap();
        let probabilities = graph.output.iter_mut().find(|o| o.name == "probabilities");
        if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) = probabilities
            .and_then(|o| o.r#type.as_mut())
            .and_then(|t| t.value.as_mut())
        {
            t.shape.as_mut().unwrap().dim[0].value = Some(Dim::DimValue(2));
        }
        let fixed = OnnxModel::load("mlp", "1", &proto.encode_to_vec()).unwrap();
        assert!(evaluate_merged(&fixed, &jobs(2)).is_none());
        // The same model on tract: nothing says its rows are computed apart (a graph there may
        // reduce or mix over the batch), so requests are not merged.
        let on_tract = OnnxModel::load_on("mlp", "1", MLP, crate::Engine::TractOnly).unwrap();
        assert!(!on_tract.rows_independent());
        assert!(evaluate_merged(&on_tract, &jobs(2)).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_answers_equal_unbatched_ones_and_requests_share_evaluations() {
        let model = Arc::new(OnnxModel::load("mlp", "1", MLP).unwrap());
        let evaluations = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = evaluations.clone();
        let batcher = Arc::new(Batcher::spawn(
            model.clone(),
            BatchOptions {
                max_rows: 64,
                max_delay: Duration::from_millis(50),
            },
            128,
            Arc::new(move |rows| seen.lock().unwrap().push(rows)),
        ));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let b = batcher.clone();
            let mut req = request(i * 3, 1 + i % 3);
            if i == 5 {
                req.outputs = Some(vec![cordon_proto::oip::RequestedOutput {
                    name: "label".into(),
                }]);
            }
            let rows = b.batchable_rows(&req).unwrap();
            tasks.push(tokio::spawn(async move {
                (req.clone(), b.infer(req, rows).await)
            }));
        }
        for t in tasks {
            let (req, got) = t.await.unwrap();
            let want = model.infer(&req).unwrap();
            assert_eq!(got.unwrap(), want, "request {:?}", req.id);
        }
        // 20 requests, fewer evaluations: they were batched.
        let evaluations = evaluations.lock().unwrap().clone();
        assert!(evaluations.len() < 20, "{evaluations:?}");
        assert_eq!(
            evaluations.iter().sum::<usize>(),
            (0..20).map(|i| 1 + i % 3).sum::<usize>()
        );
    }

    #[tokio::test]
    async fn a_bad_request_fails_alone() {
        let model = Arc::new(OnnxModel::load("mlp", "1", MLP).unwrap());
        let batcher = Arc::new(Batcher::spawn(
            model.clone(),
            BatchOptions {
                max_rows: 64,
                max_delay: Duration::from_millis(50),
            },
            8,
            Arc::new(|_| {}),
        ));
        let good = request(0, 2);
        let mut bad = request(2, 1);
        bad.inputs[0].data = json!(vec!["x"; 30]);
        let (b1, b2) = (batcher.clone(), batcher.clone());
        let (g, b) = tokio::join!(
            tokio::spawn(async move { b1.infer(good, 2).await }),
            tokio::spawn(async move { b2.infer(bad, 1).await })
        );
        assert_eq!(g.unwrap().unwrap(), model.infer(&request(0, 2)).unwrap());
        assert!(matches!(b.unwrap(), Err(EngineError::DataValue { .. })));
        // Too many rows, or inconsistent first dimensions: not batchable.
        assert_eq!(batcher.batchable_rows(&request(0, 65)), None);
    }
}
