//! Identity taggers over `http::Request`: the typed extensions an auth layer set, and the
//! peer's address.

use std::any::Any;
use std::net::SocketAddr;

use waitstate_core::tagger::{self, ExtensionReader, RequestView};

/// Reads typed values from `http::Extensions` (hyper, axum, tonic): the
/// [`ExtensionReader`] of this crate's taggers.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct HttpExtensions;

impl ExtensionReader for HttpExtensions {
    fn read<T: Send + Sync + 'static>(extensions: &dyn Any) -> Option<&T> {
        extensions.downcast_ref::<http::Extensions>()?.get::<T>()
    }
}

/// Tag by a typed value an auth layer put in the request's extensions (`waitstate-core`'s
/// [`ExtensionTagger`](tagger::ExtensionTagger), reading `http::Extensions`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use waitstate_core::tagger::current;
/// use waitstate_tower::{ExtensionTagger, GateLayer, Tagging, WaitState};
///
/// #[derive(Clone)]
/// struct User { plan: String }
///
/// let ws = WaitState::builder().tag("enterprise", 100).tag("free", 10).build()?;
/// let tagger = ExtensionTagger::new(|u: &User| Tagging::new(&u.plan)).fallback("free");
/// let app = ServiceBuilder::new()
///     // The auth layer runs first and puts the user in the extensions.
///     .map_request(|mut req: Request<()>| {
///         req.extensions_mut().insert(User { plan: "enterprise".into() });
///         req
///     })
///     .layer(GateLayer::new(ws, tagger))
///     .service(service_fn(|_req: Request<()>| async move {
///         // The gate runs the service's future in the request's admission scope.
///         let tag = current::current().map(|a| a.tag.to_string());
///         Ok::<_, Infallible>(Response::new(tag.unwrap_or_default()))
///     }));
/// let res = app.oneshot(Request::new(())).await?;
/// let body = http_body_util::BodyExt::collect(res.into_body()).await?.to_bytes();
/// assert_eq!(body, "enterprise");
/// # Ok(()) }
/// ```
pub type ExtensionTagger<T, F> = tagger::ExtensionTagger<T, F, HttpExtensions>;

/// Tag by a claim of a JWT an auth layer verified and put in the request's extensions as
/// `C` (`waitstate-core`'s [`ClaimTagger`](tagger::ClaimTagger), reading
/// `http::Extensions`). `ClaimTagger::new("plan")` reads `serde_json::Value` claims;
/// `ClaimTagger::<MyClaims>::of("plan")` your own [`Claims`](tagger::Claims) type.
pub type ClaimTagger<C = serde_json::Value> = tagger::ClaimTagger<C, HttpExtensions>;

/// The typed extension `T` of a request, for a closure tagger:
/// `waitstate_tower::extension::<User>(req)`.
pub fn extension<T: Send + Sync + 'static>(req: &dyn RequestView) -> Option<&T> {
    tagger::extension::<HttpExtensions, T>(req)
}

/// The peer's address, for servers that know it but have no extension of their own for it
/// (a hand-written hyper accept loop): insert it in each request's extensions and
/// [`RequestView::peer_addr`] reads it. axum's `ConnectInfo<SocketAddr>` (feature `axum`)
/// and tonic's `TcpConnectInfo` (feature `tonic`) are read as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The peer address among a request's extensions.
pub(crate) fn peer_addr(ext: &http::Extensions) -> Option<SocketAddr> {
    if let Some(p) = ext.get::<PeerAddr>() {
        return Some(p.0);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
    }
    #[cfg(feature = "tonic")]
    if let Some(info) = ext.get::<tonic::transport::server::TcpConnectInfo>() {
        return info.remote_addr();
    }
    None
}
