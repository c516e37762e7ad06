//! A bounded set of client labels for metrics: the first `limit` client ids seen get their own
//! label, every later one is counted as `other`, so a caller inventing ids cannot blow up the
//! number of time series.

use std::{collections::HashSet, sync::Arc};

use parking_lot::Mutex;

/// The label for clients beyond the limit.
pub const OTHER: &str = "other";

/// First come, first labelled.
#[derive(Debug)]
pub struct ClientLabels {
    limit: usize,
    seen: Mutex<HashSet<Arc<str>>>,
}

impl ClientLabels {
    /// At most `limit` distinct labels besides `other`.
    pub fn new(limit: usize) -> Self {
        Self { limit, seen: Mutex::new(HashSet::new()) }
    }

    /// The label for `client`.
    pub fn label(&self, client: &Arc<str>) -> Arc<str> {
        let mut seen = self.seen.lock();
        if seen.contains(client) {
            return client.clone();
        }
        if seen.len() < self.limit && &**client != OTHER {
            seen.insert(client.clone());
            return client.clone();
        }
        Arc::from(OTHER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_beyond_the_limit_share_one_label() {
        let labels = ClientLabels::new(2);
        let ids: Vec<Arc<str>> = ["a", "b", "c", "a"].into_iter().map(Arc::from).collect();
        let got: Vec<String> = ids.iter().map(|c| labels.label(c).to_string()).collect();
        assert_eq!(got, ["a", "b", "other", "a"]);
    }
}
