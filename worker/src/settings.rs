//! The worker's configuration and token verifier, read once per isolate.
//!
//! An isolate's `Env` does not change while it lives, so parsing the
//! variables and the JWKS once (and not on every request) is safe. A broken
//! configuration is not cached: every request reports it until it is fixed.

use std::cell::OnceCell;
use std::rc::Rc;

use roomcast_protocol::auth::Verifier;
use roomcast_protocol::config::Config;
use worker::Env;

/// Everything the router and the rooms need from the environment.
pub struct Settings {
    pub config: Config,
    pub verifier: Verifier,
}

thread_local! {
    static SETTINGS: OnceCell<Rc<Settings>> = const { OnceCell::new() };
}

/// The settings for this isolate, or a message naming the broken variable.
pub fn load(env: &Env) -> Result<Rc<Settings>, String> {
    if let Some(settings) = SETTINGS.with(|s| s.get().cloned()) {
        return Ok(settings);
    }
    let settings = Rc::new(read(env)?);
    SETTINGS.with(|s| {
        let _ = s.set(settings.clone());
    });
    Ok(settings)
}

fn read(env: &Env) -> Result<Settings, String> {
    // Vars and secrets are both plain strings on the env object.
    let config = Config::from_lookup(|name| env.var(name).ok().map(|v| v.to_string()))
        .map_err(|e| e.to_string())?;
    let verifier = Verifier::new(&config.auth).map_err(|e| e.to_string())?;
    Ok(Settings { config, verifier })
}
