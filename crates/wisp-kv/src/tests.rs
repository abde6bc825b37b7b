//! Unit tests of the store against recording and failing backends.
use super::*;
use std::sync::Mutex;
use wisp_core::StoreError;
use wisp_core::kv::KvSnapshot;

/// A backend that records what it was asked to store.
#[derive(Default)]
struct Recorded(Mutex<Vec<KvOp>>);

impl KvStore for Recorded {
    fn kv_load(&self) -> Result<KvSnapshot, StoreError> {
        Ok(KvSnapshot::default())
    }
    fn kv_apply(&self, ops: &[KvOp]) -> Result<(), StoreError> {
        self.0.lock().unwrap().extend_from_slice(ops);
        Ok(())
    }
}

fn ns() -> Namespace {
    Namespace::new("default").unwrap()
}

#[tokio::test]
async fn set_get_list_delete() {
    let rec = Arc::new(Recorded::default());
    let kv = Kv::open(rec.clone()).unwrap();
    let n = ns();
    assert!(matches!(
        kv.get(&n, "prefs", "x"),
        Err(KvError::NoSuchBucket { .. })
    ));
    for k in ["theme", "lang", "tz", "a/b"] {
        kv.set(&n, "prefs", k, Bytes::from(k.to_uppercase()), None)
            .await
            .unwrap();
    }
    assert_eq!(kv.get(&n, "prefs", "theme").unwrap().unwrap(), "THEME");
    assert_eq!(kv.get(&n, "prefs", "nope").unwrap(), None);
    let p = kv.list(&n, "prefs", "", None, 2).unwrap();
    assert_eq!(p.keys, vec!["a/b", "lang"]);
    let p = kv.list(&n, "prefs", "", p.next.as_deref(), 2).unwrap();
    assert_eq!(p.keys, vec!["theme", "tz"]);
    assert_eq!(p.next, None);
    assert_eq!(
        kv.list(&n, "prefs", "t", None, 10).unwrap().keys,
        vec!["theme", "tz"]
    );
    assert!(kv.delete(&n, "prefs", "tz", None).await.unwrap());
    assert!(!kv.delete(&n, "prefs", "tz", None).await.unwrap());
    assert_eq!(kv.buckets(&n)[0].keys, 3);
    // Another namespace sees none of it.
    let other = Namespace::new("other").unwrap();
    assert!(kv.buckets(&other).is_empty());
    assert!(kv.get(&other, "prefs", "theme").is_err());
    let ops = rec.0.lock().unwrap();
    assert!(matches!(&ops[0], KvOp::CreateBucket { bucket, .. } if bucket == "prefs"));
    assert_eq!(ops.len(), 1 + 4 + 1);
}

#[tokio::test]
async fn increments_and_swaps_are_atomic() {
    let kv = Kv::open(Arc::new(Recorded::default())).unwrap();
    let n = ns();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (kv, n) = (kv.clone(), n.clone());
            tokio::spawn(async move { kv.increment(&n, "c", "hits", 1, None).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(kv.get(&n, "c", "hits").unwrap().unwrap(), "200");
    assert_eq!(kv.increment(&n, "c", "hits", -50, None).await.unwrap(), 150);
    kv.set(&n, "c", "word", Bytes::from("abc"), None)
        .await
        .unwrap();
    assert!(matches!(
        kv.increment(&n, "c", "word", 1, None).await,
        Err(KvError::NotANumber(_))
    ));
    let h = kv.cas(&n, "c", "word").unwrap();
    assert_eq!(h.value.as_deref(), Some(&b"abc"[..]));
    let stale = kv.cas(&n, "c", "word").unwrap();
    kv.swap(h, Bytes::from("def"), None).await.unwrap();
    let fresh = match kv.swap(stale, Bytes::from("xyz"), None).await {
        Err(SwapError::Changed(c)) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(fresh.value.as_deref(), Some(&b"def"[..]));
    kv.swap(fresh, Bytes::from("xyz"), None).await.unwrap();
    assert_eq!(kv.get(&n, "c", "word").unwrap().unwrap(), "xyz");
    // CAS on an absent key: swap succeeds only while it stays absent.
    let h = kv.cas(&n, "c", "new").unwrap();
    assert!(h.value.is_none());
    kv.swap(h, Bytes::from("1"), None).await.unwrap();
}

/// A backend whose disk is "full" for writes of values starting with
/// `big`: a transaction with one of them stores nothing.
#[derive(Default)]
struct Full(Mutex<Vec<KvOp>>);

impl KvStore for Full {
    fn kv_load(&self) -> Result<KvSnapshot, StoreError> {
        Ok(KvSnapshot::default())
    }
    fn kv_apply(&self, ops: &[KvOp]) -> Result<(), StoreError> {
        if ops
            .iter()
            .any(|o| matches!(o, KvOp::Set { value, .. } if value.starts_with(b"big")))
        {
            return Err(StoreError::Full("database or disk is full".into()));
        }
        self.0.lock().unwrap().extend_from_slice(ops);
        Ok(())
    }
}

/// What the backend holds: its ops replayed.
fn stored(ops: &[KvOp]) -> BTreeMap<(String, String), Vec<u8>> {
    let mut m = BTreeMap::new();
    for op in ops {
        match op {
            KvOp::Set {
                bucket, key, value, ..
            } => {
                m.insert((bucket.clone(), key.clone()), value.clone());
            }
            KvOp::Delete { bucket, key, .. } => {
                m.remove(&(bucket.clone(), key.clone()));
            }
            KvOp::DeleteBucket { bucket, .. } => m.retain(|(b, _), _| b != bucket),
            KvOp::CreateBucket { .. } | KvOp::PutEvents { .. } | KvOp::DropEvents { .. } => {}
        }
    }
    m
}

#[tokio::test]
async fn a_write_that_cannot_be_stored_is_never_visible() {
    let be = Arc::new(Full::default());
    let kv = Kv::open(be.clone()).unwrap();
    let n = ns();
    kv.set(&n, "b", "k", Bytes::from("old"), None)
        .await
        .unwrap();
    let e = kv.set(&n, "b", "k", Bytes::from("big new"), None).await;
    assert!(matches!(e, Err(KvError::StorageFull(_))), "{e:?}");
    assert_eq!(kv.get(&n, "b", "k").unwrap().unwrap(), "old");
    assert_eq!(kv.buckets(&n)[0].bytes, 4);
    // A new bucket made by a failed write is not there either.
    assert!(
        kv.set(&n, "nb", "k", Bytes::from("big"), None)
            .await
            .is_err()
    );
    assert!(!kv.bucket_exists(&n, "nb"));
    // Deletes still go through.
    assert!(kv.delete(&n, "b", "k", None).await.unwrap());

    // Many concurrent writers, batched together with failing ones:
    // afterwards memory holds exactly what the backend stored, and
    // every write that was acknowledged is there.
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let (kv, n) = (kv.clone(), n.clone());
            tokio::spawn(async move {
                let key = format!("k{}", i % 7);
                let r = match i % 5 {
                    0 => {
                        kv.set(&n, "c", &key, Bytes::from(format!("big{i}")), None)
                            .await
                    }
                    1 => kv.delete(&n, "c", &key, None).await.map(|_| ()),
                    2 => kv.increment(&n, "c", "n", 1, None).await.map(|_| ()),
                    _ => {
                        kv.set(&n, "c", &key, Bytes::from(format!("v{i}")), None)
                            .await
                    }
                };
                (i, r.is_ok())
            })
        })
        .collect();
    let mut incremented = 0;
    for t in tasks {
        let (i, ok) = t.await.unwrap();
        if i % 5 == 0 {
            assert!(!ok, "a write that could not be stored was acknowledged");
        }
        if i % 5 == 2 && ok {
            incremented += 1;
        }
    }
    let want = stored(&be.0.lock().unwrap());
    let mut have = BTreeMap::new();
    for k in kv.list(&n, "c", "", None, 1000).unwrap().keys {
        have.insert(
            ("c".to_string(), k.clone()),
            kv.get(&n, "c", &k).unwrap().unwrap().to_vec(),
        );
    }
    let want: BTreeMap<_, _> = want.into_iter().filter(|((b, _), _)| b == "c").collect();
    assert_eq!(have, want);
    // No increment was lost or counted twice.
    assert_eq!(
        kv.get(&n, "c", "n").unwrap().map(|v| v.to_vec()),
        Some(incremented.to_string().into_bytes()).filter(|_| incremented > 0)
    );
    let bytes: u64 = have
        .iter()
        .map(|((_, k), v)| (k.len() + v.len()) as u64)
        .sum();
    assert_eq!(
        kv.buckets(&n).iter().find(|b| b.name == "c").unwrap().bytes,
        bytes
    );
}

#[tokio::test]
async fn limits_are_checked() {
    let kv = Kv::open(Arc::new(Recorded::default())).unwrap();
    let n = ns();
    let big = Bytes::from(vec![0u8; wisp_core::kv::MAX_VALUE_BYTES + 1]);
    assert!(matches!(
        kv.set(&n, "b", "k", big, None).await,
        Err(KvError::Invalid(_))
    ));
    assert!(matches!(
        kv.set(&n, "Bad Name", "k", Bytes::new(), None).await,
        Err(KvError::Invalid(_))
    ));
    assert!(!kv.bucket_exists(&n, "b"));
}

/// A hook for bucket `watched`: its events are the key's name; it refuses
/// changes of `nope`, and its queue takes events only once `open`.
#[derive(Default)]
struct Hook {
    open: std::sync::atomic::AtomicBool,
    queued: Arc<Mutex<Vec<(String, String)>>>,
}

impl ChangeHook for Hook {
    fn prepare(&self, c: &KvChange) -> Result<Option<Vec<u8>>, KvError> {
        if c.key == "nope" {
            return Err(KvError::QueueFull("full".into()));
        }
        Ok((c.bucket == "watched").then(|| c.key.clone().into_bytes()))
    }
    fn publish(
        &self,
        id: String,
        record: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let open = self.open.load(Ordering::Relaxed);
        let queued = self.queued.clone();
        Box::pin(async move {
            if !open {
                return Err("no room".into());
            }
            queued
                .lock()
                .unwrap()
                .push((id, String::from_utf8(record).unwrap()));
            Ok(())
        })
    }
}

/// The event records a backend holds (its ops replayed).
fn stored_events(ops: &[KvOp]) -> Vec<String> {
    let mut m: Vec<(String, String)> = Vec::new();
    for op in ops {
        match op {
            KvOp::PutEvents { id, record } => {
                m.push((id.clone(), String::from_utf8(record.clone()).unwrap()))
            }
            KvOp::DropEvents { id } => m.retain(|(i, _)| i != id),
            _ => {}
        }
    }
    m.into_iter().map(|(_, r)| r).collect()
}

#[tokio::test]
async fn a_change_and_its_events_are_stored_together_and_handed_on_until_taken() {
    let be = Arc::new(Full::default());
    let kv = Kv::open(be.clone()).unwrap();
    let hook = Arc::new(Hook::default());
    kv.set_hook(hook.clone());
    let n = ns();
    // The queue takes nothing: the changes are stored with their events.
    kv.set(&n, "watched", "a", Bytes::from("1"), None)
        .await
        .unwrap();
    kv.increment(&n, "watched", "c", 1, None).await.unwrap();
    assert!(kv.delete(&n, "watched", "a", None).await.unwrap());
    kv.set(&n, "other", "x", Bytes::from("1"), None)
        .await
        .unwrap();
    // A change that cannot be stored stores no events either.
    let e = kv.set(&n, "watched", "b", Bytes::from("big"), None).await;
    assert!(matches!(e, Err(KvError::StorageFull(_))), "{e:?}");
    // A change the hook refuses is not made.
    let e = kv.set(&n, "watched", "nope", Bytes::from("1"), None).await;
    assert!(matches!(e, Err(KvError::QueueFull(_))), "{e:?}");
    assert_eq!(kv.get(&n, "watched", "nope").unwrap(), None);
    let ops = be.0.lock().unwrap().clone();
    assert_eq!(stored_events(&ops), ["a", "c", "a"]);
    assert_eq!(kv.pending_events(), 3);
    // Once the queue takes them, they are handed on in order and dropped.
    hook.open.store(true, Ordering::Relaxed);
    for _ in 0..300 {
        if kv.pending_events() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let queued: Vec<String> = hook
        .queued
        .lock()
        .unwrap()
        .iter()
        .map(|q| q.1.clone())
        .collect();
    assert_eq!(queued, ["a", "c", "a"]);
    assert_eq!(kv.pending_events(), 0);
    assert!(stored_events(&be.0.lock().unwrap()).is_empty());
    // From now on each change's events are handed on at once.
    kv.set(&n, "watched", "d", Bytes::from("1"), None)
        .await
        .unwrap();
    assert_eq!(hook.queued.lock().unwrap().len(), 4);
    assert!(stored_events(&be.0.lock().unwrap()).is_empty());
}

/// A backend holding event records from before a restart.
struct Leftover;

impl KvStore for Leftover {
    fn kv_load(&self) -> Result<KvSnapshot, StoreError> {
        Ok(KvSnapshot {
            events: vec![
                ("e1".into(), b"one".to_vec()),
                ("e2".into(), b"two".to_vec()),
            ],
            ..KvSnapshot::default()
        })
    }
    fn kv_apply(&self, _: &[KvOp]) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn events_left_from_before_a_restart_are_handed_on_with_their_ids() {
    let kv = Kv::open(Arc::new(Leftover)).unwrap();
    let hook = Arc::new(Hook::default());
    hook.open.store(true, Ordering::Relaxed);
    kv.set_hook(hook.clone());
    for _ in 0..100 {
        if hook.queued.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *hook.queued.lock().unwrap(),
        [
            ("e1".to_string(), "one".to_string()),
            ("e2".to_string(), "two".to_string())
        ]
    );
}
