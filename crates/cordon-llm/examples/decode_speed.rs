//! Greedy decoding speed on one GGUF file: prompt (prefill) time and decode tokens/s, as one
//! JSON line. scripts/bench_llm.py runs it next to llama.cpp on the same prompt.
//!
//! `cargo run --release -p cordon-llm --example decode_speed -- MODEL.gguf PROMPT TOKENS`

use cordon_llm::{LlmModel, LoadOptions, Message, Sampler, Sampling};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: decode_speed MODEL.gguf PROMPT TOKENS";
    let path = args.next().ok_or(usage)?;
    let prompt = args.next().ok_or(usage)?;
    let tokens: usize = args.next().ok_or(usage)?.parse()?;
    let bytes = std::fs::read(&path)?;
    let started = Instant::now();
    let model = LlmModel::from_gguf(&bytes, &LoadOptions { context: 2048 })?;
    let load_s = started.elapsed().as_secs_f64();
    let prompt = model.chat_prompt(&[Message::user(prompt)])?;
    let mut cache = model.new_cache();
    let mut sampler = Sampler::new(&Sampling::greedy())?;
    let started = Instant::now();
    let mut logits = model.forward(&prompt, &mut cache)?;
    let prefill_s = started.elapsed().as_secs_f64();
    // Every step decodes, past end-of-turn too: a fixed amount of work.
    let started = Instant::now();
    for _ in 0..tokens {
        let t = sampler.sample(&logits);
        logits = model.forward(&[t], &mut cache)?;
    }
    let decode_s = started.elapsed().as_secs_f64();
    println!(
        "{{\"engine\":\"cordon-llm\",\"load_s\":{load_s:.3},\"prompt_tokens\":{},\"prefill_s\":{prefill_s:.4},\"tokens\":{tokens},\"decode_tokens_per_s\":{:.2}}}",
        prompt.len(),
        tokens as f64 / decode_s
    );
    Ok(())
}
