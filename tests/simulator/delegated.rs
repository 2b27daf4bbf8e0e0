//! Delegated mode: the user tokens the simulator signs and the JWKS that verifies them, Entra's
//! on-behalf-of grant with each kind of client credential and the AADSTS errors for what it
//! refuses, and delegated Graph tokens that reach only their user's own mailbox.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use exchange_simulator::{UserTokenOptions, DEMO};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    aadsts, certificate_assertion, certificate_claims, create_body, federated_assertion,
    graph_error, item_stream, items_path, mailbox_path, signing_key, spawn, TestSim, APP_CERT,
    FEDERATED_ISSUER, FEDERATED_PUB, FEDERATED_SUBJECT, OTHER_CERT, SETTINGS,
};

const OBO_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const GRAPH_DEFAULT: &str = "https://graph.microsoft.com/.default";
/// Microsoft Graph's own application id: the audience of a token meant for Graph, not the gateway.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// How the gateway authenticates itself in the on-behalf-of request.
#[derive(Clone, Copy, Debug)]
enum Credential {
    Secret,
    Certificate,
    Federated,
}

impl TestSim {
    /// Registers the certificate and the federated issuer, so that every credential works.
    fn trust_every_credential(&self) {
        self.sim.register_certificate(APP_CERT);
        self.sim
            .register_federated_issuer(FEDERATED_ISSUER, FEDERATED_SUBJECT, FEDERATED_PUB);
    }

    /// The on-behalf-of form for `assertion`, authenticated with `credential`.
    fn obo_form(&self, assertion: &str, credential: Credential) -> Vec<(&'static str, String)> {
        let mut form = vec![
            ("client_id", DEMO.client_id.to_owned()),
            ("grant_type", OBO_GRANT.to_owned()),
            ("requested_token_use", "on_behalf_of".to_owned()),
            ("assertion", assertion.to_owned()),
            ("scope", GRAPH_DEFAULT.to_owned()),
        ];
        match credential {
            Credential::Secret => form.push(("client_secret", DEMO.client_secret.to_owned())),
            Credential::Certificate | Credential::Federated => {
                let client_assertion = match credential {
                    Credential::Certificate => certificate_assertion(
                        APP_CERT,
                        Algorithm::PS256,
                        &certificate_claims(&self.token_url()),
                    ),
                    _ => {
                        federated_assertion(FEDERATED_SUBJECT, json!("api://AzureADTokenExchange"))
                    }
                };
                form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()));
                form.push(("client_assertion", client_assertion));
            }
        }
        form
    }

    async fn post_form(&self, form: &[(&'static str, String)]) -> reqwest::Response {
        self.http
            .post(self.token_url())
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Exchanges `assertion` with the demo secret; the answer unread.
    async fn obo(&self, assertion: &str) -> reqwest::Response {
        self.post_form(&self.obo_form(assertion, Credential::Secret))
            .await
    }

    /// A delegated Graph token for `address`, through a fresh user token and the demo secret.
    async fn delegated_token(&self, address: &str) -> String {
        let assertion = self.sim.user_token(address, UserTokenOptions::default());
        let response = self.obo(&assertion).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }
}

/// The claims of a JWT, unverified.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn the_jwks_the_openid_metadata_names_verifies_a_user_token_and_its_claims() {
    let t = spawn().await;
    let token = t
        .sim
        .user_token(DEMO.mailbox_address, UserTokenOptions::default());

    let metadata: Value = t
        .http
        .get(format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            t.sim.base_url(),
            DEMO.tenant_id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], t.sim.issuer());
    assert_eq!(
        t.sim.issuer(),
        format!("{}/{}/v2.0", t.sim.base_url(), DEMO.tenant_id)
    );
    assert_eq!(metadata["jwks_uri"], t.sim.jwks_url());
    assert_eq!(metadata["token_endpoint"], t.token_url());

    let jwks: JwkSet = t
        .http
        .get(t.sim.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[DEMO.client_id]);
    validation.set_issuer(&[t.sim.issuer()]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
    let claims =
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims;

    // The object id is the one Graph gives the user.
    let app_token = t.token().await;
    let settings: Value = t
        .graph_get(&app_token, SETTINGS)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(claims["oid"], settings["id"]);
    assert_eq!(claims["tid"], DEMO.tenant_id);
    assert_eq!(claims["preferred_username"], DEMO.mailbox_address);
    assert_eq!(claims["scp"], "access_as_user");
    assert_eq!(claims["ver"], "2.0");
    assert!(claims["azp"].is_string() && claims["azp"] != DEMO.client_id);
    assert!(claims["sub"].is_string());
    let (iat, nbf, exp) = (&claims["iat"], &claims["nbf"], &claims["exp"]);
    assert_eq!(iat, nbf);
    assert_eq!(exp.as_i64().unwrap() - iat.as_i64().unwrap(), 3600);

    // A token signed with another key does not verify with the JWKS.
    let forged = jsonwebtoken::encode(&header, &claims, &signing_key(OTHER_CERT)).unwrap();
    assert!(jsonwebtoken::decode::<Value>(
        &forged,
        &DecodingKey::from_jwk(jwk).unwrap(),
        &validation
    )
    .is_err());

    // Another tenant's metadata is Entra's AADSTS90002.
    let other = t
        .http
        .get(format!(
            "{}/00000000-0000-0000-0000-000000000000/discovery/v2.0/keys",
            t.sim.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        aadsts(other, StatusCode::BAD_REQUEST, "invalid_tenant").await,
        90002
    );
    assert_eq!(t.sim.counters().user_tokens_issued, 1);
    assert!(t.sim.issued_credentials().contains(&token));
}

#[tokio::test]
async fn the_obo_grant_exchanges_a_user_token_with_a_secret_a_certificate_or_a_federated_assertion()
{
    let t = spawn().await;
    t.trust_every_credential();
    for credential in [
        Credential::Secret,
        Credential::Certificate,
        Credential::Federated,
    ] {
        let assertion = t
            .sim
            .user_token(DEMO.mailbox_address, UserTokenOptions::default());
        let response = t.post_form(&t.obo_form(&assertion, credential)).await;
        assert_eq!(response.status(), StatusCode::OK, "{credential:?}");
        assert_eq!(response.headers()["cache-control"], "no-store, no-cache");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer", "{credential:?}");
        let scope = body["scope"].as_str().unwrap();
        assert!(
            scope.contains("https://graph.microsoft.com/MailboxItem.ImportExport"),
            "{scope}"
        );
        assert_eq!(body["expires_in"], 3599, "{credential:?}");
        assert_eq!(body["ext_expires_in"], 3599, "{credential:?}");
        let token = body["access_token"].as_str().unwrap();

        let me = t.graph_get(token, "/me/settings/exchange").await;
        assert_eq!(me.status(), StatusCode::OK, "{credential:?}");
        let me: Value = me.json().await.unwrap();
        assert_eq!(me["primaryMailboxId"], DEMO.mailbox_id, "{credential:?}");
    }
    let counters = t.sim.counters();
    assert_eq!(counters.obo_exchanges, 3);
    assert_eq!(counters.obo_refused, 0);
    assert_eq!(counters.tokens_issued, 3);
    assert_eq!(counters.delegated_requests, 3);
}

#[tokio::test]
async fn the_api_uri_audience_and_openid_connects_scopes_are_accepted_too() {
    let t = spawn().await;
    let assertion = t.sim.user_token(
        DEMO.mailbox_address,
        UserTokenOptions {
            audience: Some(format!("api://{}", DEMO.client_id)),
            ..UserTokenOptions::default()
        },
    );
    let mut form = t.obo_form(&assertion, Credential::Secret);
    form.iter_mut()
        .find(|(name, _)| *name == "scope")
        .unwrap()
        .1 = format!("openid profile offline_access {GRAPH_DEFAULT}");
    let response = t.post_form(&form).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_delegated_token_lives_no_longer_than_the_user_token_it_was_exchanged_for() {
    let t = spawn().await;
    let assertion = t.sim.user_token(
        DEMO.mailbox_address,
        UserTokenOptions {
            lifetime_secs: Some(120),
            ..UserTokenOptions::default()
        },
    );
    let body: Value = t.obo(&assertion).await.json().await.unwrap();
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((115..=120).contains(&expires_in), "expires_in {expires_in}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        t.graph_get(token, "/me/settings/exchange").await.status(),
        StatusCode::OK
    );

    t.sim.advance(Duration::from_secs(121));
    let expired = t.graph_get(token, "/me/settings/exchange").await;
    assert_eq!(
        graph_error(expired, StatusCode::UNAUTHORIZED).await,
        "InvalidAuthenticationToken"
    );
}

#[tokio::test]
async fn forged_foreign_expired_and_misaddressed_user_tokens_are_refused_with_their_aadsts_codes() {
    let t = spawn().await;
    let mint = |options: UserTokenOptions| t.sim.user_token(DEMO.mailbox_address, options);
    let genuine = mint(UserTokenOptions::default());
    let header = jsonwebtoken::decode_header(&genuine).unwrap();
    let claims = claims_of(&genuine);
    let other_key = signing_key(OTHER_CERT);

    let forged = jsonwebtoken::encode(&header, &claims, &other_key).unwrap();
    let mut unknown_kid = header.clone();
    unknown_kid.kid = Some("not-a-published-key".to_owned());
    let unknown_kid = jsonwebtoken::encode(&unknown_kid, &claims, &other_key).unwrap();
    let symmetric = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();

    let cases: Vec<(&str, String, u64)> = vec![
        ("a token signed by another key", forged, 50013),
        ("a kid the JWKS does not list", unknown_kid, 50013),
        ("an HS256 token", symmetric, 50013),
        ("not a JWT", "not-a-jwt".to_owned(), 50027),
        (
            "a token for Graph rather than the gateway",
            mint(UserTokenOptions {
                audience: Some(GRAPH_APP_ID.to_owned()),
                ..UserTokenOptions::default()
            }),
            500131,
        ),
        (
            "a token for another app",
            mint(UserTokenOptions {
                audience: Some("api://11111111-1111-1111-1111-111111111111".to_owned()),
                ..UserTokenOptions::default()
            }),
            500131,
        ),
        (
            "an expired token",
            mint(UserTokenOptions {
                lifetime_secs: Some(-60),
                ..UserTokenOptions::default()
            }),
            500133,
        ),
        (
            "a token valid only in an hour",
            mint(UserTokenOptions {
                not_before_secs: Some(3600),
                lifetime_secs: Some(7200),
                ..UserTokenOptions::default()
            }),
            500133,
        ),
        (
            "a token from another tenant",
            mint(UserTokenOptions {
                tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned()),
                ..UserTokenOptions::default()
            }),
            50013,
        ),
        (
            "a token from another issuer",
            mint(UserTokenOptions {
                issuer: Some(format!("https://sts.windows.net/{}/", DEMO.tenant_id)),
                ..UserTokenOptions::default()
            }),
            50013,
        ),
        (
            "a token about a user the tenant lacks",
            mint(UserTokenOptions {
                object_id: Some("9e0b7c4a-1111-4222-8333-444455556666".to_owned()),
                ..UserTokenOptions::default()
            }),
            50034,
        ),
    ];
    for (refused, (case, assertion, code)) in cases.iter().enumerate() {
        let response = t.obo(assertion).await;
        assert_eq!(
            aadsts(response, StatusCode::BAD_REQUEST, "invalid_grant").await,
            *code,
            "AADSTS code for {case}"
        );
        let counters = t.sim.counters();
        assert_eq!(
            counters.obo_refused,
            refused as u64 + 1,
            "{case} is counted"
        );
        assert_eq!(counters.token_requests_rejected, refused as u64 + 1);
        assert_eq!(counters.obo_exchanges, 0, "{case} was exchanged");
        assert_eq!(counters.tokens_issued, 0, "{case} issued a token");
    }
    // The genuine token still works after all that.
    assert_eq!(t.obo(&genuine).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_obo_grant_wants_the_apps_own_credential_the_right_token_use_and_graphs_default_scope()
{
    let t = spawn().await;
    let assertion = t
        .sim
        .user_token(DEMO.mailbox_address, UserTokenOptions::default());
    let with = |name: &'static str, value: &str| {
        let mut form = t.obo_form(&assertion, Credential::Secret);
        form.iter_mut().find(|(key, _)| *key == name).unwrap().1 = value.to_owned();
        form
    };
    let without = |name: &'static str| {
        let mut form = t.obo_form(&assertion, Credential::Secret);
        form.retain(|(key, _)| *key != name);
        form
    };
    let cases = [
        (
            "no assertion",
            without("assertion"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
        ),
        (
            "no requested_token_use",
            without("requested_token_use"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
        ),
        (
            "another requested_token_use",
            with("requested_token_use", "id_token"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            9002313,
        ),
        (
            "no client credential",
            without("client_secret"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            7000218,
        ),
        (
            "a wrong client secret",
            with("client_secret", "wrong"),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
        ),
        (
            "a single Graph permission",
            with(
                "scope",
                "https://graph.microsoft.com/MailboxItem.ImportExport",
            ),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
        ),
        (
            "the gateway's own scope",
            with("scope", &format!("api://{}/.default", DEMO.client_id)),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
        ),
    ];
    for (case, form, status, error, code) in cases {
        let response = t.post_form(&form).await;
        assert_eq!(aadsts(response, status, error).await, code, "{case}");
    }
    assert_eq!(t.sim.counters().obo_refused, 7);
    assert_eq!(t.sim.counters().obo_exchanges, 0);
}

#[tokio::test]
async fn without_consent_the_obo_grant_answers_aadsts65001_consent_required() {
    let t = spawn().await;
    let bob = "bob@contoso.com";
    t.sim.add_mailbox(bob);
    let token_of = |address| t.sim.user_token(address, UserTokenOptions::default());
    let refused_for_consent = |response: reqwest::Response| async move {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant", "{body}");
        assert_eq!(body["error_codes"], json!([65001]), "{body}");
        assert_eq!(body["suberror"], "consent_required", "{body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(
                "AADSTS65001: The user or administrator has not consented to use the application"
            ),
            "{description}"
        );
        assert!(description.contains(DEMO.client_id), "{description}");
    };

    t.sim.revoke_consent(DEMO.mailbox_address);
    refused_for_consent(t.obo(&token_of(DEMO.mailbox_address)).await).await;
    // Only that user's consent is gone.
    assert_eq!(t.obo(&token_of(bob)).await.status(), StatusCode::OK);
    t.sim.grant_consent(DEMO.mailbox_address);
    assert_eq!(
        t.obo(&token_of(DEMO.mailbox_address)).await.status(),
        StatusCode::OK
    );

    // Without the administrator's consent, only users who consented themselves get through.
    t.sim.set_admin_consent(false);
    refused_for_consent(t.obo(&token_of(bob)).await).await;
    assert_eq!(
        t.obo(&token_of(DEMO.mailbox_address)).await.status(),
        StatusCode::OK
    );
    let counters = t.sim.counters();
    assert_eq!((counters.obo_exchanges, counters.obo_refused), (3, 2));
}

#[tokio::test]
async fn a_delegated_token_imports_into_its_users_own_mailbox_and_archive() {
    let t = spawn().await;
    let archive = t.sim.add_archive(DEMO.mailbox_id);
    let token = t.delegated_token(DEMO.mailbox_address).await;

    let me: Value = t
        .graph_get(&token, "/me/settings/exchange")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["primaryMailboxId"], DEMO.mailbox_id);
    assert_eq!(me["inPlaceArchiveMailboxId"], archive.as_str());
    let mailbox_id = me["primaryMailboxId"].as_str().unwrap();
    let own = t.graph_get(&token, SETTINGS).await;
    assert_eq!(own.status(), StatusCode::OK);

    let folders = t
        .graph_get(
            &token,
            &format!("{}/folders/inbox", mailbox_path(mailbox_id)),
        )
        .await;
    assert_eq!(folders.status(), StatusCode::OK);
    let inbox: Value = folders.json().await.unwrap();
    let url = t.import_url(&token, mailbox_id).await;
    let data = item_stream("delegated");
    let (status, created) = t
        .import(&url, &create_body(inbox["id"].as_str().unwrap(), &data))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let stored = t.sim.items(DEMO.mailbox_id);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].item_id, created["itemId"].as_str().unwrap());
    assert_eq!(stored[0].data, data);

    // Reading it back works with the same token.
    let item_id = created["itemId"].as_str().unwrap();
    let listed = t
        .graph_get(&token, &items_path(mailbox_id, "inbox", None))
        .await;
    assert_eq!(listed.status(), StatusCode::OK);
    let exported = t.export(&token, mailbox_id, &[item_id]).await;
    assert_eq!(exported.status(), StatusCode::OK);

    // The user's archive is theirs too.
    let archive_url = t.import_url(&token, &archive).await;
    let archive_inbox = t.sim.folder_id(&archive, "inbox").unwrap();
    let (status, _) = t
        .import(
            &archive_url,
            &create_body(&archive_inbox, &item_stream("archived")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let counters = t.sim.counters();
    assert_eq!(counters.items_created, 2);
    assert_eq!(counters.delegated_access_denied, 0);
}

#[tokio::test]
async fn a_delegated_token_is_refused_another_users_mailbox_and_settings_with_403() {
    let t = spawn().await;
    let bob = t.sim.add_mailbox("bob@contoso.com");
    let bobs_item = t.sim.put_item(&bob, "inbox", item_stream("bob's"));
    let token = t.delegated_token(DEMO.mailbox_address).await;

    let denied = [
        t.create_import_session(&token, &bob).await,
        t.graph_get(&token, &format!("{}/folders", mailbox_path(&bob)))
            .await,
        t.graph_get(&token, &format!("{}/folders/inbox", mailbox_path(&bob)))
            .await,
        t.graph_get(&token, &items_path(&bob, "inbox", None)).await,
        t.graph_get(&token, &items_path(&bob, "inbox", Some(&bobs_item.item_id)))
            .await,
        t.export(&token, &bob, &[&bobs_item.item_id]).await,
        t.graph_delete(
            &token,
            &format!(
                "{}?disposalType=hardDelete",
                items_path(&bob, "inbox", Some(&bobs_item.item_id))
            ),
        )
        .await,
        // An unknown mailbox looks the same as another user's.
        t.create_import_session(
            &token,
            &format!("MBX:{}@{}", uuid::Uuid::new_v4(), DEMO.tenant_id),
        )
        .await,
        t.graph_get(&token, "/users/bob@contoso.com/settings/exchange")
            .await,
        t.graph_get(&token, "/users/nobody@contoso.com/settings/exchange")
            .await,
    ];
    let count = denied.len() as u64;
    for response in denied {
        let url = response.url().clone();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{url}: {body}");
        assert_eq!(body["error"]["code"], "ErrorAccessDenied", "{url}");
        assert_eq!(
            body["error"]["message"], "Access is denied. Check credentials and try again.",
            "{url}"
        );
    }
    assert_eq!(t.sim.items(&bob).len(), 1, "bob's item is still there");
    assert_eq!(t.sim.counters().delegated_access_denied, count);
    assert_eq!(t.sim.counters().sessions_created, 0);

    // The app's own token still reaches every mailbox.
    let app_token = t.token().await;
    assert_eq!(
        t.create_import_session(&app_token, &bob).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn me_is_only_for_delegated_tokens() {
    let t = spawn().await;
    let app_token = t.token().await;
    let response = t.graph_get(&app_token, "/me/settings/exchange").await;
    assert_eq!(
        graph_error(response, StatusCode::BAD_REQUEST).await,
        "BadRequest"
    );
}

#[tokio::test]
async fn the_admin_route_mints_a_user_token_the_obo_grant_accepts() {
    let t = spawn().await;
    let response = t
        .http
        .post(t.admin_url("user-tokens"))
        .json(&json!({
            "address": "ADELE@contoso.com",
            "audience": format!("api://{}", DEMO.client_id),
            "lifetimeSecs": 600,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let claims = claims_of(token);
    assert_eq!(claims["aud"], format!("api://{}", DEMO.client_id));
    assert_eq!(claims["preferred_username"], DEMO.mailbox_address);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    assert_eq!(t.obo(token).await.status(), StatusCode::OK);

    // An expired one, for trying the refusal.
    let expired: Value = t
        .http
        .post(t.admin_url("user-tokens"))
        .json(&json!({"address": DEMO.mailbox_address, "lifetimeSecs": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = t.obo(expired["access_token"].as_str().unwrap()).await;
    assert_eq!(
        aadsts(response, StatusCode::BAD_REQUEST, "invalid_grant").await,
        500133
    );

    for (body, status) in [
        (
            json!({"address": "nobody@contoso.com"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"address": DEMO.mailbox_address, "scp": "x"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"lifetimeSecs": 60}), StatusCode::BAD_REQUEST),
    ] {
        let response = t
            .http
            .post(t.admin_url("user-tokens"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"].is_string(), "{answer}");
    }
    assert_eq!(t.sim.counters().user_tokens_issued, 2);
}

#[tokio::test]
async fn a_rotated_signing_key_is_published_beside_the_old_one_which_still_verifies() {
    let t = spawn().await;
    let old = t
        .sim
        .user_token(DEMO.mailbox_address, UserTokenOptions::default());
    t.sim.rotate_signing_key();
    let new = t
        .sim
        .user_token(DEMO.mailbox_address, UserTokenOptions::default());
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    assert_ne!(kid(&old), kid(&new));

    let jwks: JwkSet = t
        .http
        .get(t.sim.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(jwks.find(&kid(&old)).is_some());
    assert!(jwks.find(&kid(&new)).is_some());
    assert_eq!(t.obo(&old).await.status(), StatusCode::OK);
    assert_eq!(t.obo(&new).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoking_tokens_revokes_delegated_ones_too() {
    let t = spawn().await;
    let token = t.delegated_token(DEMO.mailbox_address).await;
    t.sim.revoke_tokens();
    let response = t.graph_get(&token, "/me/settings/exchange").await;
    assert_eq!(
        graph_error(response, StatusCode::UNAUTHORIZED).await,
        "InvalidAuthenticationToken"
    );
}
