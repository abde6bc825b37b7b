//! `wasi:keyvalue` for functions, backed by the node's key-value store.
//!
//! Both drafts in use are provided, so a component built against either
//! runs unchanged: `0.2.0-draft` (what wasmtime's own implementation
//! serves) and `0.2.0-draft2` (what Spin serves: compare-and-swap, signed
//! increments, string cursors). `open(name)` reaches the bucket `name` of
//! the function's own namespace, and only when the function's spec grants
//! it (`--kv NAME`); anything else is `access-denied`.

use bytes::Bytes;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wisp_core::Namespace;
use wisp_core::kv::{KvError, LIST_PAGE};
use wisp_kv::{Kv, SwapError};

mod draft {
    wasmtime::component::bindgen!({
        path: "wit/keyvalue-draft",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::BucketHandle,
        },
    });
}

mod draft2 {
    wasmtime::component::bindgen!({
        path: "wit/keyvalue-draft2",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::BucketHandle,
            "wasi:keyvalue/atomics.cas": super::CasHandle,
        },
    });
}

use draft::wasi::keyvalue as d1;
use draft2::wasi::keyvalue as d2;

/// What one instance may reach in the key-value store.
#[derive(Clone)]
pub struct KvCtx {
    /// None: the node runs without a key-value store (tests of the
    /// executor alone); every `open` fails.
    pub kv: Option<Kv>,
    pub namespace: Namespace,
    /// Buckets the function's spec grants.
    pub grants: Arc<[String]>,
    /// The function's name.
    pub function: Option<String>,
}

/// An open bucket.
pub struct BucketHandle {
    name: String,
}

/// A compare-and-swap handle.
pub struct CasHandle(wisp_kv::Cas);

pub struct KvView<'a> {
    ctx: &'a KvCtx,
    table: &'a mut ResourceTable,
}

impl<'a> KvView<'a> {
    pub fn new(ctx: &'a KvCtx, table: &'a mut ResourceTable) -> Self {
        Self { ctx, table }
    }

    fn kv(&self) -> Result<Kv, KvError> {
        self.ctx
            .kv
            .clone()
            .ok_or_else(|| KvError::Store("this node has no key-value store".into()))
    }

    /// The function making changes (its writes do not trigger it).
    fn by(&self) -> Option<&str> {
        self.ctx.function.as_deref()
    }

    fn bucket(&self, b: &Resource<BucketHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(b)?.name.clone())
    }

    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<String, Opened>> {
        if !self.ctx.grants.contains(&identifier) {
            return Ok(Err(Opened::Denied));
        }
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(e) => return Ok(Err(Opened::Failed(e))),
        };
        // A granted bucket that was deleted since the deploy comes back empty.
        if !kv.bucket_exists(&self.ctx.namespace, &identifier)
            && let Err(e) = kv.create_bucket(&self.ctx.namespace, &identifier).await
        {
            return Ok(Err(Opened::Failed(e)));
        }
        Ok(Ok(identifier))
    }
}

enum Opened {
    Denied,
    Failed(KvError),
}

/// The marker type for [`add_to_linker`].
pub struct KvData;

impl HasData for KvData {
    type Data<'a> = KvView<'a>;
}

/// Adds both drafts of `wasi:keyvalue` to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    d1::store::add_to_linker::<T, KvData>(linker, get)?;
    d1::atomics::add_to_linker::<T, KvData>(linker, get)?;
    d1::batch::add_to_linker::<T, KvData>(linker, get)?;
    d2::store::add_to_linker::<T, KvData>(linker, get)?;
    d2::atomics::add_to_linker::<T, KvData>(linker, get)?;
    d2::batch::add_to_linker::<T, KvData>(linker, get)?;
    Ok(())
}

// ---- what both drafts do ----
//
// The drafts differ in types (cursors, signedness, CAS), not in what the
// store does: each operation is written once here, returning the store's
// own error, and each draft maps it to its `error` variant. The outer
// result is a trap (a bad resource handle).

type Op<T> = wasmtime::Result<Result<T, KvError>>;

impl KvView<'_> {
    fn get_op(&self, b: &Resource<BucketHandle>, key: &str) -> Op<Option<Vec<u8>>> {
        let name = self.bucket(b)?;
        Ok(self
            .kv()
            .and_then(|kv| kv.get(&self.ctx.namespace, &name, key))
            .map(|v| v.map(|v| v.to_vec())))
    }

    async fn set_op(&mut self, b: &Resource<BucketHandle>, key: &str, value: Vec<u8>) -> Op<()> {
        let name = self.bucket(b)?;
        let Ok(kv) = self.kv() else {
            return Ok(self.kv().map(|_| ()));
        };
        Ok(kv
            .set(
                &self.ctx.namespace,
                &name,
                key,
                Bytes::from(value),
                self.by(),
            )
            .await)
    }

    async fn delete_op(&mut self, b: &Resource<BucketHandle>, key: &str) -> Op<()> {
        let name = self.bucket(b)?;
        let Ok(kv) = self.kv() else {
            return Ok(self.kv().map(|_| ()));
        };
        Ok(kv
            .delete(&self.ctx.namespace, &name, key, self.by())
            .await
            .map(|_| ()))
    }

    async fn increment_op(&mut self, b: &Resource<BucketHandle>, key: &str, delta: i64) -> Op<i64> {
        let name = self.bucket(b)?;
        let Ok(kv) = self.kv() else {
            return Ok(self.kv().map(|_| 0));
        };
        Ok(kv
            .increment(&self.ctx.namespace, &name, key, delta, self.by())
            .await)
    }

    fn get_many_op(
        &self,
        b: &Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> Op<Vec<(String, Option<Vec<u8>>)>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match self.get_op(b, &k)? {
                Ok(v) => out.push((k, v)),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(out))
    }

    /// Not atomic, as the interface says: stops at the first error.
    async fn set_many_op(
        &mut self,
        b: &Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Op<()> {
        for (k, v) in key_values {
            if let Err(e) = self.set_op(b, &k, v).await? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many_op(&mut self, b: &Resource<BucketHandle>, keys: Vec<String>) -> Op<()> {
        for k in keys {
            if let Err(e) = self.delete_op(b, &k).await? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }
}

// ---- 0.2.0-draft ----

fn e1(e: KvError) -> d1::store::Error {
    match e {
        KvError::NoSuchBucket { .. } => d1::store::Error::NoSuchStore,
        KvError::NotGranted(_) => d1::store::Error::AccessDenied,
        e => d1::store::Error::Other(e.to_string()),
    }
}

type R1<T> = wasmtime::Result<Result<T, d1::store::Error>>;

impl d1::store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> R1<Resource<BucketHandle>> {
        Ok(match KvView::open(self, identifier).await? {
            Ok(name) => Ok(self.table.push(BucketHandle { name })?),
            Err(Opened::Denied) => Err(d1::store::Error::AccessDenied),
            Err(Opened::Failed(e)) => Err(e1(e)),
        })
    }
}

impl d1::store::HostBucket for KvView<'_> {
    async fn get(&mut self, b: Resource<BucketHandle>, key: String) -> R1<Option<Vec<u8>>> {
        Ok(self.get_op(&b, &key)?.map_err(e1))
    }

    async fn set(&mut self, b: Resource<BucketHandle>, key: String, value: Vec<u8>) -> R1<()> {
        Ok(self.set_op(&b, &key, value).await?.map_err(e1))
    }

    async fn delete(&mut self, b: Resource<BucketHandle>, key: String) -> R1<()> {
        Ok(self.delete_op(&b, &key).await?.map_err(e1))
    }

    async fn exists(&mut self, b: Resource<BucketHandle>, key: String) -> R1<bool> {
        Ok(self.get_op(&b, &key)?.map(|v| v.is_some()).map_err(e1))
    }

    async fn list_keys(
        &mut self,
        b: Resource<BucketHandle>,
        cursor: Option<u64>,
    ) -> R1<d1::store::KeyResponse> {
        let name = self.bucket(&b)?;
        // This draft's cursor is a number: how many keys came before.
        let skip = cursor.unwrap_or(0) as usize;
        Ok(self
            .kv()
            .and_then(|kv| kv.list(&self.ctx.namespace, &name, "", None, skip + LIST_PAGE))
            .map(|page| {
                let more = page.next.is_some();
                let keys: Vec<String> = page.keys.into_iter().skip(skip).collect();
                let cursor = more.then(|| (skip + keys.len()) as u64);
                d1::store::KeyResponse { keys, cursor }
            })
            .map_err(e1))
    }

    async fn drop(&mut self, b: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl d1::atomics::Host for KvView<'_> {
    async fn increment(&mut self, b: Resource<BucketHandle>, key: String, delta: u64) -> R1<u64> {
        let Ok(delta) = i64::try_from(delta) else {
            return Ok(Err(d1::store::Error::Other(format!(
                "delta {delta} is larger than a signed 64-bit integer"
            ))));
        };
        Ok(self
            .increment_op(&b, &key, delta)
            .await?
            .map_err(e1)
            .and_then(|n| {
                u64::try_from(n).map_err(|_| {
                    d1::store::Error::Other(format!(
                        "{key:?} is negative ({n}): use draft2's signed increment"
                    ))
                })
            }))
    }
}

impl d1::batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        b: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> R1<Vec<Option<(String, Vec<u8>)>>> {
        Ok(self
            .get_many_op(&b, keys)?
            .map(|all| all.into_iter().map(|(k, v)| v.map(|v| (k, v))).collect())
            .map_err(e1))
    }

    async fn set_many(
        &mut self,
        b: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> R1<()> {
        Ok(self.set_many_op(&b, key_values).await?.map_err(e1))
    }

    async fn delete_many(&mut self, b: Resource<BucketHandle>, keys: Vec<String>) -> R1<()> {
        Ok(self.delete_many_op(&b, keys).await?.map_err(e1))
    }
}

// ---- 0.2.0-draft2 ----

fn e2(e: KvError) -> d2::store::Error {
    match e {
        KvError::NoSuchBucket { .. } => d2::store::Error::NoSuchStore,
        KvError::NotGranted(_) => d2::store::Error::AccessDenied,
        e => d2::store::Error::Other(e.to_string()),
    }
}

type R2<T> = wasmtime::Result<Result<T, d2::store::Error>>;

impl d2::store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> R2<Resource<BucketHandle>> {
        Ok(match KvView::open(self, identifier).await? {
            Ok(name) => Ok(self.table.push(BucketHandle { name })?),
            Err(Opened::Denied) => Err(d2::store::Error::AccessDenied),
            Err(Opened::Failed(e)) => Err(e2(e)),
        })
    }
}

impl d2::store::HostBucket for KvView<'_> {
    async fn get(&mut self, b: Resource<BucketHandle>, key: String) -> R2<Option<Vec<u8>>> {
        Ok(self.get_op(&b, &key)?.map_err(e2))
    }

    async fn set(&mut self, b: Resource<BucketHandle>, key: String, value: Vec<u8>) -> R2<()> {
        Ok(self.set_op(&b, &key, value).await?.map_err(e2))
    }

    async fn delete(&mut self, b: Resource<BucketHandle>, key: String) -> R2<()> {
        Ok(self.delete_op(&b, &key).await?.map_err(e2))
    }

    async fn exists(&mut self, b: Resource<BucketHandle>, key: String) -> R2<bool> {
        Ok(self.get_op(&b, &key)?.map(|v| v.is_some()).map_err(e2))
    }

    async fn list_keys(
        &mut self,
        b: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> R2<d2::store::KeyResponse> {
        let name = self.bucket(&b)?;
        Ok(self
            .kv()
            .and_then(|kv| kv.list(&self.ctx.namespace, &name, "", cursor.as_deref(), LIST_PAGE))
            .map(|page| d2::store::KeyResponse {
                keys: page.keys,
                cursor: page.next,
            })
            .map_err(e2))
    }

    async fn drop(&mut self, b: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl d2::atomics::Host for KvView<'_> {
    async fn increment(&mut self, b: Resource<BucketHandle>, key: String, delta: i64) -> R2<i64> {
        Ok(self.increment_op(&b, &key, delta).await?.map_err(e2))
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), d2::atomics::CasError>> {
        let CasHandle(handle) = self.table.delete(cas)?;
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(e) => return Ok(Err(d2::atomics::CasError::StoreError(e2(e)))),
        };
        Ok(match kv.swap(handle, Bytes::from(value), self.by()).await {
            Ok(()) => Ok(()),
            Err(SwapError::Store(e)) => Err(d2::atomics::CasError::StoreError(e2(e))),
            Err(SwapError::Changed(fresh)) => Err(d2::atomics::CasError::CasFailed(
                self.table.push(CasHandle(fresh))?,
            )),
        })
    }
}

impl d2::atomics::HostCas for KvView<'_> {
    async fn new(&mut self, b: Resource<BucketHandle>, key: String) -> R2<Resource<CasHandle>> {
        let name = self.bucket(&b)?;
        match self
            .kv()
            .and_then(|kv| kv.cas(&self.ctx.namespace, &name, &key))
        {
            Ok(h) => Ok(Ok(self.table.push(CasHandle(h))?)),
            Err(e) => Ok(Err(e2(e))),
        }
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> R2<Option<Vec<u8>>> {
        Ok(Ok(self
            .table
            .get(&cas)?
            .0
            .value
            .as_ref()
            .map(|v| v.to_vec())))
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl d2::batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        b: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> R2<Vec<(String, Option<Vec<u8>>)>> {
        Ok(self.get_many_op(&b, keys)?.map_err(e2))
    }

    async fn set_many(
        &mut self,
        b: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> R2<()> {
        Ok(self.set_many_op(&b, key_values).await?.map_err(e2))
    }

    async fn delete_many(&mut self, b: Resource<BucketHandle>, keys: Vec<String>) -> R2<()> {
        Ok(self.delete_many_op(&b, keys).await?.map_err(e2))
    }
}
