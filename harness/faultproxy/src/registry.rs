//! The control plane: every proxy by name, and the operations of the API on them.
//!
//! Two locks with two jobs. `gate` (async) makes API mutations one at a time, so check-then-act
//! needs no retry logic; it may be held across binding and stopping listeners, and only mutations
//! wait on it. `proxies` (sync) guards the map for moments only and is never held across an
//! `await`, so reads answer at once and the data plane, which never touches either, is not slowed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::model::{Protocol, ProxyConfig, ProxyPatch, ProxyView, Toxic, ToxicView};
use crate::proxy::{self, ProxyShared};
use crate::udp;

/// A listening period of a proxy: dropping `stop` ends it; `done` finishes when it has ended.
struct Listening {
    stop: watch::Sender<()>,
    done: JoinHandle<()>,
}

impl Listening {
    /// The opposite of `Registry::start`: closes the listener, cuts the connections, waits.
    async fn stop(self) {
        drop(self.stop);
        let _ = self.done.await;
    }
}

struct Entry {
    /// The listen address as asked for (may say port 0), to recognise an unchanged populate.
    listen_requested: String,
    /// The listen address as reported: the bound address once the proxy has listened.
    listen: String,
    upstream: String,
    enabled: bool,
    protocol: Protocol,
    toxics: Vec<Toxic>,
    shared: Arc<ProxyShared>,
    listening: Option<Listening>,
}

impl Entry {
    fn view(&self) -> ProxyView {
        ProxyView {
            name: self.shared.name.clone(),
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            enabled: self.enabled,
            toxics: self.toxics.iter().map(ToxicView::from).collect(),
            protocol: self.protocol,
        }
    }

    /// Publishes the toxic list to live connections.
    fn publish_toxics(&self) {
        self.shared
            .toxics
            .send_replace(Arc::from(self.toxics.clone().into_boxed_slice()));
    }
}

/// All proxies of one server.
pub struct Registry {
    seed: u64,
    /// Where listeners and connections run.
    data: Handle,
    gate: tokio::sync::Mutex<()>,
    proxies: Mutex<BTreeMap<String, Entry>>,
}

impl Registry {
    pub fn new(seed: u64, data: Handle) -> Registry {
        Registry {
            seed,
            data,
            gate: tokio::sync::Mutex::new(()),
            proxies: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic elsewhere while holding the map leaves it consistent (no multi-step edits).
        self.proxies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_entry<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Entry) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut map = self.map();
        let entry = map.get_mut(name).ok_or(ApiError::ProxyNotFound)?;
        f(entry)
    }

    pub fn list(&self) -> BTreeMap<String, ProxyView> {
        self.map()
            .iter()
            .map(|(name, entry)| (name.clone(), entry.view()))
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<ProxyView, ApiError> {
        self.with_entry(name, |entry| Ok(entry.view()))
    }

    /// Binds `listen` and starts accepting (TCP) or receiving (UDP) on the data plane; returns the
    /// bound address.
    async fn start(
        &self,
        listen: &str,
        upstream: &str,
        protocol: Protocol,
        shared: &Arc<ProxyShared>,
    ) -> Result<(SocketAddr, Listening), ApiError> {
        let listen_error = |message: String| ApiError::Listen {
            listen: listen.to_owned(),
            message,
        };
        let addr = tokio::net::lookup_host(listen)
            .await
            .map_err(|err| listen_error(err.to_string()))?
            .next()
            .ok_or_else(|| listen_error("address resolves to nothing".into()))?;
        let (stop, stop_rx) = watch::channel(());
        let (bound, done) = match protocol {
            Protocol::Tcp => {
                // std's listener sets SO_REUSEADDR, so an address left with TIME_WAIT connections
                // by a disable can be bound again at once by the enable.
                let listener = std::net::TcpListener::bind(addr)
                    .map_err(|err| listen_error(err.to_string()))?;
                listener
                    .set_nonblocking(true)
                    .map_err(|err| listen_error(err.to_string()))?;
                let bound = listener
                    .local_addr()
                    .map_err(|err| listen_error(err.to_string()))?;
                let done = self.data.spawn(proxy::listen(
                    listener,
                    Arc::from(upstream),
                    shared.clone(),
                    stop_rx,
                ));
                (bound, done)
            }
            Protocol::Udp => {
                let socket =
                    std::net::UdpSocket::bind(addr).map_err(|err| listen_error(err.to_string()))?;
                socket
                    .set_nonblocking(true)
                    .map_err(|err| listen_error(err.to_string()))?;
                let bound = socket
                    .local_addr()
                    .map_err(|err| listen_error(err.to_string()))?;
                let done = self.data.spawn(udp::listen(
                    socket,
                    Arc::from(upstream),
                    shared.clone(),
                    stop_rx,
                ));
                (bound, done)
            }
        };
        tracing::info!(proxy = %shared.name, listen = %bound, %upstream, protocol = protocol.as_str(), "listening");
        Ok((bound, Listening { stop, done }))
    }

    /// Creates a proxy (409 if the name is taken) and starts it if enabled.
    pub async fn create(&self, config: ProxyConfig) -> Result<ProxyView, ApiError> {
        let _gate = self.gate.lock().await;
        if self.map().contains_key(&config.name) {
            return Err(ApiError::ProxyAlreadyExists);
        }
        self.insert(config).await
    }

    /// Inserts a proxy whose name is free; the caller holds the gate.
    async fn insert(&self, config: ProxyConfig) -> Result<ProxyView, ApiError> {
        let shared = Arc::new(ProxyShared::new(config.name.clone(), self.seed));
        let mut entry = Entry {
            listen_requested: config.listen.clone(),
            listen: config.listen.clone(),
            upstream: config.upstream.clone(),
            enabled: config.enabled,
            protocol: config.protocol,
            toxics: Vec::new(),
            shared: shared.clone(),
            listening: None,
        };
        if config.enabled {
            let (bound, listening) = self
                .start(&config.listen, &config.upstream, config.protocol, &shared)
                .await?;
            entry.listen = bound.to_string();
            entry.listening = Some(listening);
        }
        let view = entry.view();
        self.map().insert(config.name, entry);
        Ok(view)
    }

    /// Removes a proxy: stops it, cutting its connections. The opposite of `create`.
    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let _gate = self.gate.lock().await;
        let entry = self.map().remove(name).ok_or(ApiError::ProxyNotFound)?;
        if let Some(listening) = entry.listening {
            listening.stop().await;
        }
        tracing::info!(proxy = %name, "deleted");
        Ok(())
    }

    /// Creates or replaces each proxy, in order. A proxy whose listen and upstream are unchanged
    /// keeps its toxics and connections, and only follows `enabled`, as in Toxiproxy.
    pub async fn populate(&self, configs: Vec<ProxyConfig>) -> Result<Vec<ProxyView>, ApiError> {
        let _gate = self.gate.lock().await;
        let mut views = Vec::with_capacity(configs.len());
        for config in configs {
            let unchanged = self.with_entry(&config.name, |entry| {
                Ok(config.upstream == entry.upstream
                    && config.protocol == entry.protocol
                    && (config.listen == entry.listen_requested || config.listen == entry.listen))
            });
            match unchanged {
                Ok(true) => {
                    let patch = ProxyPatch {
                        enabled: Some(config.enabled),
                        ..ProxyPatch::default()
                    };
                    views.push(self.apply_patch(&config.name, patch).await?);
                }
                Ok(false) => {
                    let old = self.map().remove(&config.name);
                    if let Some(listening) = old.and_then(|entry| entry.listening) {
                        listening.stop().await;
                    }
                    views.push(self.insert(config).await?);
                }
                Err(_) => views.push(self.insert(config).await?),
            }
        }
        Ok(views)
    }

    /// Changes listen, upstream or enabled. A new listen or upstream restarts the proxy (cutting its
    /// connections, as Toxiproxy does); `enabled: false` is "down", `true` listens again.
    pub async fn update(&self, name: &str, patch: ProxyPatch) -> Result<ProxyView, ApiError> {
        let _gate = self.gate.lock().await;
        self.apply_patch(name, patch).await
    }

    async fn apply_patch(&self, name: &str, patch: ProxyPatch) -> Result<ProxyView, ApiError> {
        let (restart, stopping, shared) = self.with_entry(name, |entry| {
            let moved = patch.listen.as_ref().is_some_and(|l| *l != entry.listen)
                || patch
                    .upstream
                    .as_ref()
                    .is_some_and(|u| *u != entry.upstream);
            let enabled = patch.enabled.unwrap_or(entry.enabled);
            let stopping = if moved || !enabled {
                entry.listening.take()
            } else {
                None
            };
            if let Some(listen) = &patch.listen {
                if *listen != entry.listen {
                    entry.listen_requested = listen.clone();
                    entry.listen = listen.clone();
                }
            }
            if let Some(upstream) = &patch.upstream {
                entry.upstream = upstream.clone();
            }
            entry.enabled = enabled;
            let restart = enabled
                .then(|| (entry.listen.clone(), entry.upstream.clone(), entry.protocol))
                .filter(|_| entry.listening.is_none());
            Ok((restart, stopping, entry.shared.clone()))
        })?;
        if let Some(listening) = stopping {
            listening.stop().await;
            tracing::info!(proxy = %name, "stopped listening");
        }
        if let Some((listen, upstream, protocol)) = restart {
            let started = self.start(&listen, &upstream, protocol, &shared).await;
            let mut map = self.map();
            let entry = map.get_mut(name).ok_or(ApiError::ProxyNotFound)?;
            match started {
                Ok((bound, listening)) => {
                    entry.listen = bound.to_string();
                    entry.listening = Some(listening);
                }
                Err(err) => {
                    entry.enabled = false;
                    return Err(err);
                }
            }
        }
        self.get(name)
    }

    /// Enables every proxy and removes every toxic of both streams. The undo of all faults.
    pub async fn reset(&self) -> Result<(), ApiError> {
        let _gate = self.gate.lock().await;
        let names: Vec<String> = self.map().keys().cloned().collect();
        for name in names {
            self.with_entry(&name, |entry| {
                entry.toxics.clear();
                entry.publish_toxics();
                Ok(())
            })?;
            let patch = ProxyPatch {
                enabled: Some(true),
                ..ProxyPatch::default()
            };
            self.apply_patch(&name, patch).await?;
        }
        tracing::info!("reset: all proxies enabled, all toxics removed");
        Ok(())
    }

    pub fn toxics(&self, proxy: &str) -> Result<Vec<ToxicView>, ApiError> {
        self.with_entry(proxy, |entry| {
            Ok(entry.toxics.iter().map(ToxicView::from).collect())
        })
    }

    pub fn toxic(&self, proxy: &str, toxic: &str) -> Result<ToxicView, ApiError> {
        self.with_entry(proxy, |entry| {
            entry
                .toxics
                .iter()
                .find(|t| t.name == toxic)
                .map(ToxicView::from)
                .ok_or(ApiError::ToxicNotFound)
        })
    }

    /// Adds a toxic; live connections pick it up. The opposite of `remove_toxic`. A type that
    /// does not act on the proxy's protocol is refused.
    pub fn add_toxic(&self, proxy: &str, toxic: Toxic) -> Result<ToxicView, ApiError> {
        self.with_entry(proxy, |entry| {
            if !toxic.kind.supports(entry.protocol) {
                return Err(ApiError::ToxicProtocol {
                    type_name: toxic.kind.type_name(),
                    protocol: entry.protocol.as_str(),
                });
            }
            if entry.toxics.iter().any(|t| t.name == toxic.name) {
                return Err(ApiError::ToxicAlreadyExists);
            }
            let view = ToxicView::from(&toxic);
            tracing::info!(proxy = %proxy, toxic = ?view, "toxic added");
            entry.toxics.push(toxic);
            entry.publish_toxics();
            Ok(view)
        })
    }

    /// Changes a toxic's toxicity or attributes from a JSON body.
    pub fn update_toxic(
        &self,
        proxy: &str,
        toxic: &str,
        body: &[u8],
    ) -> Result<ToxicView, ApiError> {
        self.with_entry(proxy, |entry| {
            let slot = entry
                .toxics
                .iter_mut()
                .find(|t| t.name == toxic)
                .ok_or(ApiError::ToxicNotFound)?;
            *slot = slot.parse_update(body)?;
            let view = ToxicView::from(&*slot);
            tracing::info!(proxy = %proxy, toxic = ?view, "toxic updated");
            entry.publish_toxics();
            Ok(view)
        })
    }

    /// Removes a toxic; live connections drop it. The opposite of `add_toxic`.
    pub fn remove_toxic(&self, proxy: &str, toxic: &str) -> Result<(), ApiError> {
        self.with_entry(proxy, |entry| {
            let before = entry.toxics.len();
            entry.toxics.retain(|t| t.name != toxic);
            if entry.toxics.len() == before {
                return Err(ApiError::ToxicNotFound);
            }
            tracing::info!(proxy = %proxy, toxic = %toxic, "toxic removed");
            entry.publish_toxics();
            Ok(())
        })
    }

    /// Stops every proxy; used when the server shuts down.
    pub async fn stop_all(&self) {
        let _gate = self.gate.lock().await;
        let stopping: Vec<Listening> = self
            .map()
            .values_mut()
            .filter_map(|entry| entry.listening.take())
            .collect();
        for listening in stopping {
            listening.stop().await;
        }
    }
}
