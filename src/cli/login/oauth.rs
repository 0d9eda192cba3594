//! The identity provider's side of a sign-in: its metadata, an OAuth client
//! for its endpoints, the tokens read out of its answers, renewal with a
//! refresh token, and revocation.

use std::path::Path;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, Client, ClientId, DeviceAuthorizationUrl, EndpointMaybeSet, EndpointNotSet,
    ErrorResponse, ExtraTokenFields, HttpClientError, RedirectUrl, RefreshToken, RequestTokenError,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use super::LoginError;
use super::cache::{Secret, expiry};
use crate::idp::discovery::{self, Discovery, is_tls_or_loopback};
use crate::text::{causes, printable};

/// The OpenID Connect field of a token response that OAuth does not know.
#[derive(Clone, Default, Deserialize, Serialize)]
pub(super) struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl std::fmt::Debug for IdTokenField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.id_token.as_ref().map(|_| "<redacted>");
        f.debug_struct("IdTokenField")
            .field("id_token", &shown)
            .finish()
    }
}

impl ExtraTokenFields for IdTokenField {}

pub(super) type Tokens = StandardTokenResponse<IdTokenField, BasicTokenType>;

/// A public client (no secret) of the provider, each endpoint set if its
/// metadata names one.
pub(super) type OidcClient = Client<
    BasicErrorResponse,
    Tokens,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointMaybeSet,
    EndpointMaybeSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
>;

/// The errors the provider's endpoints answer through oauth2.
pub(super) type TokenError<TE> = RequestTokenError<HttpClientError<reqwest::Error>, TE>;

/// What a sign-in or a renewal obtained.
#[derive(Debug)]
pub(super) struct Obtained {
    pub id_token: Secret,
    pub refresh_token: Option<Secret>,
    /// The ID token's `exp`.
    pub expires_at: u64,
}

/// An identity provider, found from its issuer.
#[derive(Debug)]
pub(super) struct Provider {
    pub http: reqwest::Client,
    pub meta: Discovery,
    pub client_id: String,
}

impl Provider {
    /// The provider `issuer`, its TLS trusting `idp_ca` besides the usual
    /// roots, as client `client_id`.
    pub(super) async fn discover(
        issuer: &str,
        client_id: &str,
        idp_ca: Option<&Path>,
    ) -> Result<Self, LoginError> {
        safe_url("issuer", issuer)?;
        let ca = idp_ca
            .map(|p| {
                std::fs::read(p).map_err(|source| LoginError::IdpCa {
                    path: p.to_owned(),
                    source,
                })
            })
            .transpose()?;
        // No redirects: oauth2 needs that, and a token request redirected
        // elsewhere would carry the code or refresh token there.
        let http = discovery::client(ca.as_deref()).map_err(LoginError::Discovery)?;
        let meta = Discovery::fetch(&http, issuer)
            .await
            .map_err(LoginError::Discovery)?;
        Ok(Self {
            http,
            meta,
            client_id: client_id.to_owned(),
        })
    }

    /// The client, with `redirect` for the code flow.
    pub(super) fn client(&self, redirect: Option<RedirectUrl>) -> Result<OidcClient, LoginError> {
        let m = &self.meta;
        let auth = endpoint("authorization_endpoint", &m.authorization_endpoint)?;
        let device = endpoint(
            "device_authorization_endpoint",
            &m.device_authorization_endpoint,
        )?;
        let token = endpoint("token_endpoint", &m.token_endpoint)?;
        let client = Client::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri_option(auth.map(AuthUrl::from_url))
            .set_device_authorization_url_option(device.map(DeviceAuthorizationUrl::from_url))
            .set_token_uri_option(token.map(TokenUrl::from_url));
        Ok(match redirect {
            Some(r) => client.set_redirect_uri(r),
            None => client,
        })
    }

    /// The token endpoint, for messages.
    pub(super) fn token_url(&self) -> &str {
        self.meta.token_endpoint.as_deref().unwrap_or_default()
    }

    /// A new ID token for `refresh_token`.
    pub(super) async fn refresh(&self, refresh_token: &Secret) -> Result<Obtained, LoginError> {
        self.require("token_endpoint", &self.meta.token_endpoint)?;
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let tokens = self
            .client(None)?
            .exchange_refresh_token(&token)
            .map_err(|e| LoginError::Metadata(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| token_error(self.token_url(), e))?;
        let mut got = obtained(tokens)?;
        // RFC 6749 §6: the provider may keep the refresh token as it was.
        if got.refresh_token.is_none() {
            got.refresh_token = Some(refresh_token.clone());
        }
        Ok(got)
    }

    /// Revokes `refresh_token` at the provider (RFC 7009): `Ok(false)` if it
    /// has no revocation endpoint.
    pub(super) async fn revoke(&self, refresh_token: &Secret) -> Result<bool, LoginError> {
        let Some(url) = endpoint("revocation_endpoint", &self.meta.revocation_endpoint)? else {
            return Ok(false);
        };
        let response = self
            .http
            .post(url.as_str())
            .form(&[
                ("token", refresh_token.expose()),
                ("token_type_hint", "refresh_token"),
                ("client_id", self.client_id.as_str()),
            ])
            .send()
            .await
            .map_err(|e| LoginError::Token {
                url: url.to_string(),
                why: unreachable(&causes(&e)),
            })?;
        if !response.status().is_success() {
            return Err(LoginError::Token {
                url: url.to_string(),
                why: format!("answered {}", response.status()),
            });
        }
        Ok(true)
    }

    /// An error unless the metadata names `field`.
    pub(super) fn require(
        &self,
        field: &'static str,
        v: &Option<String>,
    ) -> Result<(), LoginError> {
        match v {
            Some(_) => Ok(()),
            None => Err(LoginError::MissingEndpoint {
                issuer: self.meta.issuer.clone(),
                field,
            }),
        }
    }
}

/// The metadata's URL `field`, if given, checked to be one tokens may be
/// sent to.
fn endpoint(field: &'static str, v: &Option<String>) -> Result<Option<reqwest::Url>, LoginError> {
    v.as_deref().map(|u| safe_url(field, u)).transpose()
}

/// `url` parsed, if HTTPS or plain HTTP on this machine.
fn safe_url(field: &'static str, url: &str) -> Result<reqwest::Url, LoginError> {
    let insecure = || LoginError::Insecure {
        field,
        url: printable(url).into_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| insecure())?;
    if is_tls_or_loopback(&parsed) {
        Ok(parsed)
    } else {
        Err(insecure())
    }
}

/// The ID token and refresh token of a token response.
pub(super) fn obtained(t: Tokens) -> Result<Obtained, LoginError> {
    let id_token = t
        .extra_fields()
        .id_token
        .clone()
        .ok_or(LoginError::NoIdToken)?;
    let expires_at = expiry(&id_token).ok_or(LoginError::NoExpiry)?;
    Ok(Obtained {
        id_token: Secret::new(id_token),
        refresh_token: t
            .refresh_token()
            .map(|r| Secret::new(r.secret().to_owned())),
        expires_at,
    })
}

/// A failed request to the token endpoint `url`. No part of a response body
/// is shown: it may hold a token.
pub(super) fn token_error<TE>(url: &str, e: TokenError<TE>) -> LoginError
where
    TE: ErrorResponse + std::fmt::Display + 'static,
{
    let why = match &e {
        RequestTokenError::ServerResponse(r) => {
            format!("refused: {}", printable(&r.to_string()))
        }
        RequestTokenError::Request(r) => unreachable(&causes(r)),
        RequestTokenError::Parse(p, _) => {
            format!("answered something other than tokens ({})", p.inner())
        }
        RequestTokenError::Other(o) => format!("answered unexpectedly ({o})"),
    };
    LoginError::Token {
        url: url.to_owned(),
        why,
    }
}

/// Why the provider could not be reached, with a hint where its TLS is
/// the cause.
pub(super) fn unreachable(cause: &str) -> String {
    let lower = cause.to_ascii_lowercase();
    let tls = [
        "certificate",
        "unknownissuer",
        "unknown issuer",
        "badsignature",
    ];
    if tls.iter().any(|t| lower.contains(t)) {
        format!(
            "cannot be reached ({cause}): if a private CA signed its certificate, give it with --idp-ca (or COUNTERSIGN_IDP_CA)"
        )
    } else {
        format!("cannot be reached ({cause})")
    }
}
