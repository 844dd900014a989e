//! Clients: list per API, create (the secret shown once), rotate a secret, delete.

use std::fmt::Write as _;

use http::{Method, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::http_util::Body;
use crate::oauth::login_page::escape;
use crate::proxy::gateway::Gateway;

use super::session::Live;
use super::{
    Answer, Form, Nav, Notice, Query, api, cell, csrf_field, layout, page_response, q, redirect,
    seg,
};

const GRANTS: [&str; 4] = [
    "client_credentials",
    "authorization_code",
    "refresh_token",
    "password",
];

/// The ids of the APIs that have clients (an `oauth` block).
pub(super) async fn oauth_apis(gateway: &Gateway) -> Vec<String> {
    let list = api(gateway, Method::GET, "/apis", None).await;
    list.body["apis"]
        .as_array()
        .map(|apis| {
            apis.iter()
                .filter(|a| a["oauth"] == Value::Bool(true))
                .filter_map(|a| a["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A secret to show once, after create or rotate.
pub(super) struct Revealed {
    client_id: String,
    secret: String,
}

pub(super) async fn page(
    gateway: &Gateway,
    live: &Live,
    query: &Query,
    outcome: Option<(StatusCode, Notice, Option<Revealed>)>,
) -> Response<Body> {
    let apis = oauth_apis(gateway).await;
    let selected = query
        .text("api")
        .map(str::to_owned)
        .or_else(|| apis.first().cloned());
    let (status, notice, revealed) = match outcome {
        Some((status, notice, revealed)) => (status, Some(notice), revealed),
        None => (StatusCode::OK, done_notice(query), None),
    };
    let mut content = String::new();
    if apis.is_empty() {
        content
            .push_str("<p>No API has an <code>oauth</code> block, so there are no clients.</p>\n");
        return page_response(
            status,
            layout("Clients", Nav::Clients, live, notice.as_ref(), &content),
        );
    }
    content.push_str("<nav aria-label=\"APIs\" class=\"tabs\"><ul>\n");
    for id in &apis {
        let current = if Some(id) == selected.as_ref() {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = writeln!(
            content,
            "<li><a href=\"/ui/clients?api={}\"{current}>{}</a></li>",
            q(id),
            escape(id)
        );
    }
    content.push_str("</ul></nav>\n");
    let Some(api_id) = selected else {
        return page_response(
            status,
            layout("Clients", Nav::Clients, live, notice.as_ref(), &content),
        );
    };
    if let Some(revealed) = &revealed {
        let _ = write!(
            content,
            "<section class=\"secret\" aria-labelledby=\"secret-title\">\n<h2 id=\"secret-title\">Secret of {}</h2>\n\
             <p>Copy it now: it is shown only this once and is stored only as a hash.</p>\n\
             <p><output id=\"client-secret\" data-client=\"{}\">{}</output></p>\n</section>\n",
            escape(&revealed.client_id),
            escape(&revealed.client_id),
            escape(&revealed.secret)
        );
    }
    let list = api(
        gateway,
        Method::GET,
        &format!("/apis/{}/clients", seg(&api_id)),
        None,
    )
    .await;
    if !list.ok() {
        let notice = Notice::Error(list.error());
        return page_response(
            list.status,
            layout("Clients", Nav::Clients, live, Some(&notice), &content),
        );
    }
    let _ = write!(
        content,
        "<table>\n<caption>Clients of {}</caption>\n<thead><tr><th scope=\"col\">client_id</th><th scope=\"col\">kind</th><th scope=\"col\">grants</th><th scope=\"col\">scopes</th><th scope=\"col\">policy</th><th scope=\"col\">actions</th></tr></thead>\n<tbody>\n",
        escape(&api_id)
    );
    let empty = Vec::new();
    for client in list.body["clients"].as_array().unwrap_or(&empty) {
        let id = client["client_id"].as_str().unwrap_or("");
        let public = client["public"].as_bool().unwrap_or(false);
        let read_only = client["read_only"].as_bool().unwrap_or(true);
        let sessions_link = format!(
            "<a href=\"/ui/sessions?api={}&amp;client={}\">sessions</a>",
            q(&api_id),
            q(id)
        );
        let actions = if read_only {
            format!("{sessions_link} <span class=\"muted\">(from the API file: read-only)</span>")
        } else {
            let hidden = format!(
                "{}<input type=\"hidden\" name=\"api\" value=\"{}\"><input type=\"hidden\" name=\"client_id\" value=\"{}\">",
                csrf_field(live),
                escape(&api_id),
                escape(id)
            );
            let rotate = if public {
                String::new()
            } else {
                format!(
                    "<form method=\"post\" action=\"/ui/clients/rotate\" class=\"inline\">{hidden}<button type=\"submit\" aria-label=\"Rotate the secret of {}\">Rotate secret</button></form>",
                    escape(id)
                )
            };
            format!(
                "{sessions_link} {rotate}<form method=\"post\" action=\"/ui/clients/delete\" class=\"inline\" data-confirm=\"Delete client {}? Its sessions are revoked.\">{hidden}<button type=\"submit\" class=\"danger\" aria-label=\"Delete client {}\">Delete</button></form>",
                escape(id),
                escape(id)
            )
        };
        let _ = writeln!(
            content,
            "<tr data-client=\"{}\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"actions\">{actions}</td></tr>",
            escape(id),
            escape(id),
            if public { "public" } else { "confidential" },
            cell(&client["grant_types"]),
            cell(&client["scopes"]),
            cell(&client["policy"]),
        );
    }
    content.push_str("</tbody>\n</table>\n");
    content.push_str(&create_form(live, &api_id));
    page_response(
        status,
        layout("Clients", Nav::Clients, live, notice.as_ref(), &content),
    )
}

fn create_form(live: &Live, api_id: &str) -> String {
    let mut grants = String::new();
    for grant in GRANTS {
        let _ = writeln!(
            grants,
            "<label class=\"check\"><input type=\"checkbox\" name=\"{}\" value=\"true\"{}> {grant}</label>",
            grant_field(grant),
            if grant == "client_credentials" {
                " checked"
            } else {
                ""
            }
        );
    }
    format!(
        "<section>\n<h2>New client of {api}</h2>\n<form method=\"post\" action=\"/ui/clients/create\" class=\"stacked\">\n{csrf}\
         <input type=\"hidden\" name=\"api\" value=\"{api}\">\n\
         <label for=\"client_id\">client_id <span class=\"muted\">(blank: generated)</span></label>\n<input id=\"client_id\" name=\"client_id\" type=\"text\">\n\
         <fieldset>\n<legend>Grant types</legend>\n{grants}</fieldset>\n\
         <label for=\"redirect_uris\">Redirect URIs <span class=\"muted\">(one per line)</span></label>\n<textarea id=\"redirect_uris\" name=\"redirect_uris\" rows=\"2\"></textarea>\n\
         <label for=\"scopes\">Scopes <span class=\"muted\">(separated by spaces)</span></label>\n<input id=\"scopes\" name=\"scopes\" type=\"text\">\n\
         <label for=\"policy\">Policy</label>\n<input id=\"policy\" name=\"policy\" type=\"text\">\n\
         <label class=\"check\"><input type=\"checkbox\" name=\"public\" value=\"true\"> Public client (no secret; PKCE)</label>\n\
         <button type=\"submit\">Create client</button>\n</form>\n</section>\n",
        api = escape(api_id),
        csrf = csrf_field(live),
    )
}

/// The notice for `?done=` after a redirect (fixed texts: nothing from the query is shown).
fn done_notice(query: &Query) -> Option<Notice> {
    let text = match query.get("done")? {
        "deleted" => "Client deleted; its sessions are revoked.",
        _ => return None,
    };
    Some(Notice::Done(text.to_owned()))
}

/// A grant's checkbox: one name per box, since a posted form never repeats a name.
fn grant_field(grant: &str) -> String {
    format!("grant_types.{grant}")
}

fn api_of(form: &Form) -> String {
    form.text("api").unwrap_or("").to_owned()
}

fn back_query(api_id: &str) -> Query {
    Query::parse(Some(&format!("api={}", q(api_id))))
}

pub(super) async fn create(gateway: &Gateway, live: &Live, form: &Form) -> Response<Body> {
    let api_id = api_of(form);
    let mut body = Map::new();
    if let Some(id) = form.text("client_id") {
        body.insert("client_id".into(), json!(id));
    }
    let grants: Vec<&str> = GRANTS
        .into_iter()
        .filter(|grant| form.get(&grant_field(grant)) == Some("true"))
        .collect();
    body.insert("grant_types".into(), json!(grants));
    let redirect_uris: Vec<&str> = form
        .get("redirect_uris")
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    body.insert("redirect_uris".into(), json!(redirect_uris));
    let scopes: Vec<&str> = form
        .get("scopes")
        .unwrap_or("")
        .split_whitespace()
        .collect();
    body.insert("scopes".into(), json!(scopes));
    if let Some(policy) = form.text("policy") {
        body.insert("policy".into(), json!(policy));
    }
    body.insert("public".into(), json!(form.get("public") == Some("true")));
    let answer = api(
        gateway,
        Method::POST,
        &format!("/apis/{}/clients", seg(&api_id)),
        Some(&Value::Object(body)),
    )
    .await;
    if !answer.ok() {
        return refused(gateway, live, &api_id, &answer).await;
    }
    let client_id = answer.body["client_id"].as_str().unwrap_or("");
    let notice = Notice::Done(format!("Client {client_id} created."));
    done(gateway, live, &api_id, notice, revealed(&answer, client_id)).await
}

pub(super) async fn rotate(gateway: &Gateway, live: &Live, form: &Form) -> Response<Body> {
    let api_id = api_of(form);
    let client_id = form.get("client_id").unwrap_or("");
    let answer = api(
        gateway,
        Method::POST,
        &format!(
            "/apis/{}/clients/{}/rotate-secret",
            seg(&api_id),
            seg(client_id)
        ),
        None,
    )
    .await;
    if !answer.ok() {
        return refused(gateway, live, &api_id, &answer).await;
    }
    let notice = Notice::Done(format!(
        "New secret for {client_id}: the old one no longer works."
    ));
    done(gateway, live, &api_id, notice, revealed(&answer, client_id)).await
}

pub(super) async fn delete(gateway: &Gateway, live: &Live, form: &Form) -> Response<Body> {
    let api_id = api_of(form);
    let client_id = form.get("client_id").unwrap_or("");
    let answer = api(
        gateway,
        Method::DELETE,
        &format!("/apis/{}/clients/{}", seg(&api_id), seg(client_id)),
        None,
    )
    .await;
    if !answer.ok() {
        return refused(gateway, live, &api_id, &answer).await;
    }
    redirect(&format!("/ui/clients?api={}&done=deleted", q(&api_id)))
}

/// The admin API refused a change: its message and status, on the clients page of the API.
async fn refused(gateway: &Gateway, live: &Live, api_id: &str, answer: &Answer) -> Response<Body> {
    let notice = Notice::Error(answer.error());
    page(
        gateway,
        live,
        &back_query(api_id),
        Some((answer.status, notice, None)),
    )
    .await
}

/// A change that answers with a secret: the clients page of the API, showing it once. (Not a
/// redirect: the secret must not travel in a URL.)
async fn done(
    gateway: &Gateway,
    live: &Live,
    api_id: &str,
    notice: Notice,
    revealed: Option<Revealed>,
) -> Response<Body> {
    page(
        gateway,
        live,
        &back_query(api_id),
        Some((StatusCode::OK, notice, revealed)),
    )
    .await
}

/// The secret in the admin API's answer, for `client_id`.
fn revealed(answer: &Answer, client_id: &str) -> Option<Revealed> {
    answer.body["client_secret"]
        .as_str()
        .map(|secret| Revealed {
            client_id: client_id.to_owned(),
            secret: secret.to_owned(),
        })
}
