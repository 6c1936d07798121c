//! Many clients at once against one daemon: 16 clients, 6,400 mixed operations (creates,
//! mounts, unmounts, execs, removes of their own containers; shared names, volumes and tags;
//! listings) at once.
//!
//! Guards against deadlocks (between the database's write lock, the container mount claims, the
//! exec namespace lock and the janitor), lost updates under contention (a mount count or a
//! volume's user count off by one), and errors other than the documented conflicts: a name
//! already in use or an object in use (409), or a shared object another client removed just
//! before (404). Afterwards `fsck` must find nothing and every client's own containers must be
//! exactly as it left them.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use strata_daemon::client::{Client, ClientError, encode_query};
use strata_testkit::{Stratad, busybox_image, require_root};

const STRATAD: &str = env!("CARGO_BIN_EXE_stratad");
const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const IMAGE: &str = "conc/busybox:latest";
const CLIENTS: usize = 16;
const OPS_PER_CLIENT: usize = 400;
/// No operation may take this long: past it the daemon is taken to be deadlocked.
const STALL: Duration = Duration::from_mins(1);

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    conflicts: AtomicUsize,
}

/// Whether an error is one of the documented conflicts of operations on shared objects.
fn conflict(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status, .. } if *status == StatusCode::CONFLICT || *status == StatusCode::NOT_FOUND)
}

/// A client's own containers: name -> mount references it holds.
type Own = BTreeMap<String, u32>;

struct Worker {
    client: Client,
    id: usize,
    rng: u64,
    own: Own,
    made: usize,
}

impl Worker {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn own_pick(&mut self) -> Option<String> {
        let names: Vec<String> = self.own.keys().cloned().collect();
        (!names.is_empty()).then(|| names[self.below(names.len())].clone())
    }

    /// One operation. `Err` only for a failure that is not a documented conflict.
    #[expect(clippy::too_many_lines, reason = "one arm per operation")]
    async fn step(&mut self, tally: &Tally) -> Result<(), String> {
        let shared_volume = format!("shared{}", self.below(4));
        let result: Result<(), ClientError> = match self.below(13) {
            0 | 1 => {
                self.made += 1;
                let name = format!("w{}-{}", self.id, self.made);
                let mut body = json!({ "name": name, "image": IMAGE });
                if self.below(2) == 0 {
                    body["volumes"] = json!([format!("{shared_volume}:/data")]);
                }
                let created = self.client.post_json("/v1/containers", &body).await;
                created.map(|_| {
                    self.own.insert(name, 0);
                })
            }
            2 => {
                // A name every client races for: one wins, the others get 409.
                let name = format!("contended{}", self.below(3));
                let body = json!({ "name": name, "image": IMAGE });
                match self.client.post_json("/v1/containers", &body).await {
                    Ok(_) => self
                        .client
                        .on_ref(Method::DELETE, "/v1/containers", &name, "&force=true")
                        .await
                        .map(drop),
                    Err(e) => Err(e),
                }
            }
            3 | 4 => match self.own_pick() {
                Some(name) => self
                    .client
                    .on_ref(Method::POST, "/v1/containers/mount", &name, "")
                    .await
                    .map(|_| *self.own.get_mut(&name).unwrap() += 1),
                None => Ok(()),
            },
            5 | 6 => match self.own_pick().filter(|n| self.own[n] > 0) {
                Some(name) => {
                    let answer = self
                        .client
                        .on_ref(Method::POST, "/v1/containers/unmount", &name, "")
                        .await;
                    answer.and_then(|v| {
                        let refs = self.own.get_mut(&name).unwrap();
                        *refs -= 1;
                        let remaining = v["remaining"].as_u64().unwrap_or(u64::MAX);
                        if remaining == u64::from(*refs) {
                            Ok(())
                        } else {
                            Err(ClientError::Decode(format!(
                                "unmount of {name} left {remaining} references, expected {refs}"
                            )))
                        }
                    })
                }
                None => Ok(()),
            },
            7 => match self.own_pick() {
                Some(name) => {
                    let removed = self
                        .client
                        .on_ref(Method::DELETE, "/v1/containers", &name, "&force=true")
                        .await;
                    removed.map(|_| {
                        self.own.remove(&name);
                    })
                }
                None => Ok(()),
            },
            8 => self
                .client
                .post_json("/v1/volumes", &json!({ "name": shared_volume }))
                .await
                .map(drop),
            9 => self
                .client
                .value(
                    Method::DELETE,
                    &format!("/v1/volumes?name={}", encode_query(&shared_volume)),
                )
                .await
                .map(drop),
            10 => {
                let tag = format!("conc/tag{}:v", self.below(4));
                let path = format!(
                    "/v1/images/tag?source={}&target={}",
                    encode_query(IMAGE),
                    encode_query(&tag)
                );
                if self.below(2) == 0 {
                    self.client.value(Method::POST, &path).await.map(drop)
                } else {
                    self.client
                        .on_ref(Method::DELETE, "/v1/images", &tag, "")
                        .await
                        .map(drop)
                }
            }
            11 => match self.own_pick() {
                // An exec mounts, forks a child into a new mount namespace, and unmounts.
                Some(name) => {
                    let spec = json!({ "cmd": ["sh", "-c", "echo $$ > /tmp/pid"] });
                    let path = format!(
                        "/v1/containers/exec?ref={}&spec={}",
                        encode_query(&name),
                        encode_query(&spec.to_string())
                    );
                    match self.client.exec(&path).await {
                        Ok(0) => Ok(()),
                        Ok(code) => {
                            Err(ClientError::Decode(format!("exec in {name} exited {code}")))
                        }
                        Err(e) => Err(e),
                    }
                }
                None => Ok(()),
            },
            _ => {
                let reads = [
                    "/v1/containers",
                    "/v1/images",
                    "/v1/volumes",
                    "/v1/system/df",
                    "/v1/info",
                ];
                let path = reads[self.below(reads.len())];
                self.client.value(Method::GET, path).await.map(drop)
            }
        };
        match result {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if conflict(&e) => {
                tally.conflicts.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(format!("client {}: {e}", self.id)),
        }
    }
}

#[test]
fn sixteen_clients_mixed_operations_no_deadlock_no_surprise_errors_fsck_clean() {
    require_root("the concurrency test mounts overlays");
    let daemon = Stratad::start(STRATAD);
    daemon.import(STRATA, &busybox_image(IMAGE));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let finished: Vec<Own> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for id in 0..CLIENTS {
            let client = Client::new(daemon.socket());
            let tally = tally.clone();
            tasks.spawn(async move {
                let mut w = Worker {
                    client,
                    id,
                    rng: 0x9e37_79b9_7f4a_7c15
                        ^ (id as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
                    own: Own::new(),
                    made: 0,
                };
                for op in 0..OPS_PER_CLIENT {
                    match tokio::time::timeout(STALL, w.step(&tally)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(format!("op {op}: {e}")),
                        Err(_) => {
                            return Err(format!(
                                "client {id} op {op}: no answer in {STALL:?} (deadlock?)"
                            ));
                        }
                    }
                }
                Ok(w.own)
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.unwrap() {
                Ok(own) => out.push(own),
                Err(e) => panic!("{e}\n--- stratad log ---\n{}", daemon.log_tail()),
            }
        }
        out
    });
    let elapsed = started.elapsed();
    let (ok, conflicts) = (
        tally.ok.load(Ordering::Relaxed),
        tally.conflicts.load(Ordering::Relaxed),
    );
    eprintln!(
        "concurrency: {CLIENTS} clients, {} operations in {:.1} s ({:.0} ops/s): {ok} ok, {conflicts} documented conflicts",
        ok + conflicts,
        elapsed.as_secs_f64(),
        f64::from(u32::try_from(ok + conflicts).unwrap()) / elapsed.as_secs_f64()
    );
    assert_eq!(ok + conflicts, CLIENTS * OPS_PER_CLIENT);
    assert!(conflicts > 0, "the workload never contended");

    let client = Client::new(daemon.socket());
    runtime.block_on(async {
        let report = client
            .post_json("/v1/system/fsck", &json!({}))
            .await
            .unwrap();
        assert_eq!(report["findings"], json!([]), "{report:#}");
        let listed: Value = client.value(Method::GET, "/v1/containers").await.unwrap();
        let live: BTreeMap<String, bool> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["mounted"].as_bool().unwrap(),
                )
            })
            .filter(|(name, _)| name.starts_with('w'))
            .collect();
        let expected: BTreeMap<String, bool> = finished
            .iter()
            .flat_map(|own| own.iter().map(|(n, refs)| (n.clone(), *refs > 0)))
            .collect();
        assert_eq!(live, expected, "own containers (name -> mounted) differ");
    });
}
