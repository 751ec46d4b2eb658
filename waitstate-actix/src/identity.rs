//! Identity taggers over actix-web requests: the typed extensions an auth middleware set.

use std::any::Any;

use actix_web::dev::Extensions;
use waitstate_core::tagger::{self, ExtensionReader, RequestView};

/// Reads typed values from actix-web's request `Extensions`: the [`ExtensionReader`] of
/// this crate's taggers.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct ActixExtensions;

impl ExtensionReader for ActixExtensions {
    fn read<T: Send + Sync + 'static>(extensions: &dyn Any) -> Option<&T> {
        extensions.downcast_ref::<Extensions>()?.get::<T>()
    }
}

/// Tag by a typed value an auth middleware put in the request's extensions
/// (`req.extensions_mut().insert(user)`): `waitstate-core`'s
/// [`ExtensionTagger`](tagger::ExtensionTagger), reading actix-web's `Extensions`. The auth
/// middleware must run before the gate: in actix-web the middleware registered *last*
/// with `wrap` runs first.
///
/// ```
/// # #[actix_web::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use actix_web::{App, HttpMessage, HttpResponse, dev::Service, test, web};
/// use waitstate_actix::{Admitted, ExtensionTagger, Gate, Tagging, WaitState};
///
/// struct User { plan: String }
///
/// let ws = WaitState::builder().tag("enterprise", 100).tag("free", 10).build()?;
/// let tagger = ExtensionTagger::new(|u: &User| Tagging::new(&u.plan)).fallback("free");
/// let app = test::init_service(
///     App::new()
///         .wrap(Gate::new(ws, tagger))
///         // Registered last, runs first: the auth middleware.
///         .wrap_fn(|req, srv| {
///             req.extensions_mut().insert(User { plan: "enterprise".into() });
///             srv.call(req)
///         })
///         .route("/", web::get().to(|a: Admitted| async move {
///             HttpResponse::Ok().body(a.tag.to_string())
///         })),
/// )
/// .await;
/// let res = test::call_service(&app, test::TestRequest::get().to_request()).await;
/// assert_eq!(test::read_body(res).await, "enterprise");
/// # Ok(()) }
/// ```
pub type ExtensionTagger<T, F> = tagger::ExtensionTagger<T, F, ActixExtensions>;

/// Tag by a claim of a JWT an auth middleware verified and put in the request's extensions
/// as `C`: `waitstate-core`'s [`ClaimTagger`](tagger::ClaimTagger), reading actix-web's
/// `Extensions`.
pub type ClaimTagger<C = serde_json::Value> = tagger::ClaimTagger<C, ActixExtensions>;

/// The typed extension `T` of a request, for a closure tagger.
pub fn extension<T: Send + Sync + 'static>(req: &dyn RequestView) -> Option<&T> {
    tagger::extension::<ActixExtensions, T>(req)
}
