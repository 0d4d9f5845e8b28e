//! Reading other tools' own metadata: ComfyUI's `prompt` graph and InvokeAI's JSON.

use super::*;

/// Reads ComfyUI's `prompt` chunk (the API graph): prompt texts and sampler settings from the
/// first sampler node, following its `positive`/`negative` links to text-encode nodes.
pub fn parse_comfyui(graph_json: &str) -> Option<ImageMeta> {
    let graph: Value = serde_json::from_str(graph_json).ok()?;
    let nodes = graph.as_object()?;
    let text_of = |link: &Value| -> Option<String> {
        let id = match link.get(0)? {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let node = nodes.get(&id)?;
        node.get("inputs")?
            .get("text")?
            .as_str()
            .map(str::to_string)
    };
    let mut meta = ImageMeta {
        generator: Some("ComfyUI".into()),
        ..Default::default()
    };
    let mut ids: Vec<&String> = nodes.keys().collect();
    ids.sort_by_key(|k| k.parse::<u64>().unwrap_or(u64::MAX));
    let sampler = ids.iter().map(|id| &nodes[*id]).find(|n| {
        n.get("class_type")
            .and_then(Value::as_str)
            .is_some_and(|c| c.starts_with("KSampler"))
    });
    if let Some(inputs) = sampler.and_then(|n| n.get("inputs")) {
        meta.seed = inputs
            .get("seed")
            .or_else(|| inputs.get("noise_seed"))
            .and_then(Value::as_u64);
        meta.steps = inputs
            .get("steps")
            .and_then(Value::as_u64)
            .map(|s| s as u32);
        meta.guidance = inputs.get("cfg").and_then(Value::as_f64).map(|g| g as f32);
        meta.sampler = inputs
            .get("sampler_name")
            .and_then(Value::as_str)
            .map(str::to_string);
        meta.strength = inputs
            .get("denoise")
            .and_then(Value::as_f64)
            .map(|d| d as f32)
            .filter(|d| *d < 1.0);
        meta.prompt = inputs.get("positive").and_then(text_of).unwrap_or_default();
        meta.negative_prompt = inputs.get("negative").and_then(text_of).unwrap_or_default();
    }
    for id in ids {
        let node = &nodes[id];
        let class = node.get("class_type").and_then(Value::as_str).unwrap_or("");
        let inputs = node.get("inputs");
        if class.starts_with("CheckpointLoader") {
            meta.model_name = inputs
                .and_then(|i| i.get("ckpt_name"))
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if class == "EmptyLatentImage" {
            let dim = |k| inputs.and_then(|i| i.get(k)).and_then(Value::as_u64);
            meta.width = dim("width").unwrap_or(0) as u32;
            meta.height = dim("height").unwrap_or(0) as u32;
        }
    }
    Some(meta)
}

/// Reads InvokeAI's `invokeai_metadata` chunk.
pub fn parse_invokeai(json: &str) -> Option<ImageMeta> {
    let v: Value = serde_json::from_str(json).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let n = |k: &str| v.get(k).and_then(Value::as_f64);
    Some(ImageMeta {
        generator: Some("InvokeAI".into()),
        prompt: s("positive_prompt").unwrap_or_default(),
        negative_prompt: s("negative_prompt").unwrap_or_default(),
        seed: v.get("seed").and_then(Value::as_u64),
        steps: n("steps").map(|x| x as u32),
        guidance: n("cfg_scale").map(|x| x as f32),
        sampler: s("scheduler"),
        width: n("width").unwrap_or(0.0) as u32,
        height: n("height").unwrap_or(0.0) as u32,
        model_name: v
            .get("model")
            .and_then(|m| m.get("name").or_else(|| m.get("model_name")))
            .and_then(Value::as_str)
            .map(str::to_string),
        strength: n("strength").map(|x| x as f32),
        ..Default::default()
    })
}
