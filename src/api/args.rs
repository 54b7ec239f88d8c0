//! The command-line arguments of the API (`reviewflow api`, and the API of `run`).

use std::net::SocketAddr;

use super::ApiToken;

#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Address the HTTP server listens on.
    #[arg(
        id = "api_listen",
        long = "listen",
        value_name = "ADDR",
        env = "API_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// When set, every write (POST /reviews, and the schema registry's POST, PUT, DELETE)
    /// needs `Authorization: Bearer <token>`; reads stay open. Never logged.
    #[arg(long, env = "API_TOKEN", hide_env_values = true, value_parser = TokenParser)]
    pub api_token: Option<ApiToken>,

    /// Origins (scheme://host[:port], comma-separated, or `*` for any) whose pages may read
    /// the API from the browser: the figures, the event stream, the pages (CORS, GET and
    /// HEAD only). Without it, only pages served by this server may.
    #[arg(
        long = "cors-origin",
        env = "API_CORS_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ',',
        value_parser = super::cache::parse_origin
    )]
    pub cors_origins: Vec<String>,
}

/// Parses the API token without echoing it: clap's own error for a bad value would print it.
#[derive(Clone)]
struct TokenParser;

impl clap::builder::TypedValueParser for TokenParser {
    type Value = ApiToken;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<ApiToken, clap::Error> {
        value
            .to_str()
            .ok_or_else(|| "the API token must be visible ASCII characters without spaces".into())
            .and_then(str::parse)
            .map_err(|e: String| {
                clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!("invalid --api-token (API_TOKEN): {e}\n"),
                )
                .with_cmd(cmd)
            })
    }
}
