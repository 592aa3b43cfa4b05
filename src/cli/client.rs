//! The API client the configuration describes, for the commands that call the service.

use anyhow::Context;

use super::ConfigProblem;
use crate::api::client::ApiClient;
use crate::config::Config;

/// The client for `config`'s account; a configuration error (no secret, a bad URL) is a
/// [`ConfigProblem`] (exit 2).
pub(super) fn client(config: &Config) -> anyhow::Result<ApiClient> {
    let opts = config.client_options().map_err(ConfigProblem)?;
    ApiClient::new(opts).context("could not build the HTTP client")
}
