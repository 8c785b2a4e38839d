//! ListShards: every shard of a stream, page by page.

use aws_sdk_kinesis::Client;
use flowspike_retry::Policy;

use super::{classed, no_such_stream, Classed, ShardInfo};
use crate::ConsumeError;

/// Every shard of `stream` (open and closed ones still within retention); each page is retried
/// under `policy`, an unknown stream stops at once.
pub async fn list_shards(
    client: &Client,
    stream: &str,
    policy: Policy,
) -> Result<Vec<ShardInfo>, ConsumeError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let resp = flowspike_retry::retry(
            "kinesis:ListShards",
            policy,
            |e: &Classed| e.0,
            |_| {
                let req = match &token {
                    Some(t) => client.list_shards().next_token(t),
                    None => client.list_shards().stream_name(stream),
                };
                async move {
                    req.send().await.map_err(|e| {
                        if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception())
                        {
                            no_such_stream(stream)
                        } else {
                            classed("ListShards", stream, None, &e)
                        }
                    })
                }
            },
        )
        .await
        .map_err(|e| e.1)?;
        for s in resp.shards() {
            let parents = [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            out.push(ShardInfo { id: s.shard_id().to_owned(), parents });
        }
        token = resp.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
}
