//! A run's identity: the hash of its experiment, what it trains and the data it trains on;
//! and a recorded config read back as today's runner writes it.

use super::RunConfig;

/// Keys added to the config after run ids were defined (table, key, default): at the default
/// a key is left out of the id, so runs recorded before keep their ids.
const LATER_KEYS: &[(&str, &str, &str)] = &[
    ("train", "loss", "\"bce\""),
    ("train", "g_lr", "null"),
    ("train", "d_lr", "null"),
    ("train", "lr_decay", "\"none\""),
    ("train", "real_label", "1.0"),
    ("train", "clip", "null"),
    ("train", "g_ema", "0.0"),
    ("train", "g_ema_warmup", "false"),
    ("train", "gp_weight", "null"),
    ("train", "r1_gamma", "0.0"),
    ("model", "spectral_norm", "false"),
    ("model", "conditional", "\"none\""),
];

/// A run's identity: a stable hash (12 hex digits) of its experiment, its resolved config
/// without `[log]` (which changes what is written, not what is trained) and `data.dir` (where
/// the data lies), and `data_id`, the content hash of the data it trains on. The same config
/// in two experiments, or on other data, is another run.
pub fn run_id(experiment: &str, config: &RunConfig, data_id: &str) -> String {
    let mut config = config.clone();
    config.data.dir = None;
    let mut value = serde_json::to_value(&config).expect("configs serialize");
    if let Some(map) = value.as_object_mut() {
        map.remove("log");
    }
    for (table, key, default) in LATER_KEYS {
        if let Some(table) = value.get_mut(*table).and_then(|t| t.as_object_mut())
            && table.get(*key).map(|v| v.to_string()).as_deref() == Some(default)
        {
            table.remove(*key);
        }
    }
    let identity = serde_json::json!({
        "experiment": experiment,
        "config": value,
        "data": data_id,
    });
    let hex = crate::data::fetch::md5_hex(canonical_json(&identity).as_bytes());
    hex[..12].to_string()
}

/// A recorded config (JSON) with the keys added since it was recorded filled in at their
/// defaults, so configs from before and after compare equal when they train the same; as it
/// is when it does not parse as this runner's config.
pub fn with_defaults(config: serde_json::Value) -> serde_json::Value {
    serde_json::from_value::<RunConfig>(config.clone())
        .ok()
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or(config)
}

/// Every (dotted key, value) leaf of a resolved config, for the `params` table.
pub fn flatten_params(config: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            serde_json::Value::Null => {}
            leaf => out.push((prefix.to_string(), leaf.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", config, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// JSON text with object keys sorted, whatever serde_json's map order.
fn canonical_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String(k.clone()),
                        canonical_json(&map[k])
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items
                    .iter()
                    .map(canonical_json)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        other => other.to_string(),
    }
}
