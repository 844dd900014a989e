//! Sessions: a client's sessions (narrowed to one user if asked), one session by id; revoke one, or
//! every token of a client.

use std::fmt::Write as _;

use http::{Method, Response, StatusCode};
use serde_json::Value;

use crate::http_util::Body;
use crate::oauth::login_page::escape;
use crate::proxy::gateway::Gateway;

use super::clients::oauth_apis;
use super::session::Live;
use super::{
    Form, Nav, Notice, Query, api, cell, csrf_field, layout, page_response, q, redirect, seg,
};

pub(super) async fn page(
    gateway: &Gateway,
    live: &Live,
    query: &Query,
    outcome: Option<(StatusCode, Notice)>,
) -> Response<Body> {
    let (mut status, mut notice) = match outcome {
        Some((status, notice)) => (status, Some(notice)),
        None => (StatusCode::OK, done_notice(query)),
    };
    let apis = oauth_apis(gateway).await;
    let api_id = query.text("api").unwrap_or("");
    let client = query.text("client").unwrap_or("");
    let user = query.text("user").unwrap_or("");
    let sid = query.text("sid").unwrap_or("");
    let mut options = String::new();
    for id in &apis {
        let _ = write!(
            options,
            "<option value=\"{}\"{}>{}</option>",
            escape(id),
            if id == api_id { " selected" } else { "" },
            escape(id)
        );
    }
    let mut content = format!(
        "<form method=\"get\" action=\"/ui/sessions\" class=\"stacked\">\n<fieldset>\n<legend>A client's sessions</legend>\n\
         <label for=\"api\">API</label>\n<select id=\"api\" name=\"api\">{options}</select>\n\
         <label for=\"client\">client_id</label>\n<input id=\"client\" name=\"client\" type=\"text\" value=\"{}\" required>\n\
         <label for=\"user\">User <span class=\"muted\">(optional: only this username)</span></label>\n<input id=\"user\" name=\"user\" type=\"text\" value=\"{}\">\n\
         <button type=\"submit\">Show sessions</button>\n</fieldset>\n</form>\n\
         <form method=\"get\" action=\"/ui/sessions\" class=\"stacked\">\n<fieldset>\n<legend>One session</legend>\n\
         <label for=\"sid\">Session id (sid)</label>\n<input id=\"sid\" name=\"sid\" type=\"text\" value=\"{}\" required>\n\
         <button type=\"submit\">Show session</button>\n</fieldset>\n</form>\n",
        escape(client),
        escape(user),
        escape(sid),
    );
    let back = format!(
        "<input type=\"hidden\" name=\"api\" value=\"{}\"><input type=\"hidden\" name=\"client\" value=\"{}\"><input type=\"hidden\" name=\"user\" value=\"{}\">",
        escape(api_id),
        escape(client),
        escape(user)
    );
    if !sid.is_empty() {
        let answer = api(
            gateway,
            Method::GET,
            &format!("/sessions/{}", seg(sid)),
            None,
        )
        .await;
        if answer.ok() {
            content.push_str(&one_session(live, &answer.body, &back));
        } else if notice.is_none() {
            status = answer.status;
            notice = Some(Notice::Error(answer.error()));
        }
    } else if !api_id.is_empty() && !client.is_empty() {
        let answer = api(
            gateway,
            Method::GET,
            &format!("/apis/{}/clients/{}/sessions", seg(api_id), seg(client)),
            None,
        )
        .await;
        if answer.ok() {
            content.push_str(&client_sessions(live, &answer.body, user, &back));
        } else if notice.is_none() {
            status = answer.status;
            notice = Some(Notice::Error(answer.error()));
        }
    }
    page_response(
        status,
        layout("Sessions", Nav::Sessions, live, notice.as_ref(), &content),
    )
}

fn revoke_button(live: &Live, sid: &str, back: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/ui/sessions/revoke\" class=\"inline\" data-confirm=\"Revoke this session?\">{}{back}<input type=\"hidden\" name=\"sid\" value=\"{}\"><button type=\"submit\" class=\"danger\" aria-label=\"Revoke session {}\">Revoke</button></form>",
        csrf_field(live),
        escape(sid),
        escape(sid)
    )
}

fn client_sessions(live: &Live, body: &Value, user: &str, back: &str) -> String {
    let empty = Vec::new();
    let sessions: Vec<&Value> = body["sessions"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|s| user.is_empty() || s["username"].as_str() == Some(user))
        .collect();
    let mut out = String::from(
        "<table>\n<caption>Sessions</caption>\n<thead><tr><th scope=\"col\">sid</th><th scope=\"col\">user</th><th scope=\"col\">grant</th><th scope=\"col\">scope</th><th scope=\"col\">created</th><th scope=\"col\">expires</th><th scope=\"col\">actions</th></tr></thead>\n<tbody>\n",
    );
    if sessions.is_empty() {
        out.push_str("<tr><td colspan=\"7\">No live session.</td></tr>\n");
    }
    for s in sessions {
        let sid = s["sid"].as_str().unwrap_or("");
        let _ = writeln!(
            out,
            "<tr data-sid=\"{}\"><td><a href=\"/ui/sessions?sid={}\"><code>{}</code></a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(sid),
            q(sid),
            escape(sid),
            cell(&s["username"]),
            cell(&s["grant"]),
            cell(&s["scope"]),
            time(&s["created_at"]),
            time(&s["expires_at"]),
            revoke_button(live, sid, back),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    let stateless = &body["stateless"];
    let _ = write!(
        out,
        "<p>Tokens stored nowhere (client_credentials and grants without refresh): {} issued, last at {}; \
         they cannot be revoked one by one.</p>\n\
         <form method=\"post\" action=\"/ui/sessions/revoke-client\" data-confirm=\"Revoke every token of this client?\">{}{back}\
         <button type=\"submit\" class=\"danger\">Revoke every token of this client</button></form>\n",
        cell(&stateless["issued"]),
        time(&stateless["last_issued_at"]),
        csrf_field(live),
    );
    out
}

fn one_session(live: &Live, s: &Value, back: &str) -> String {
    let sid = s["sid"].as_str().unwrap_or("");
    let mut out = format!(
        "<section>\n<h2>Session <code>{}</code></h2>\n<dl class=\"definition\">\n",
        escape(sid)
    );
    for (label, key) in [
        ("API", "api"),
        ("client", "client_id"),
        ("user", "username"),
        ("grant", "grant"),
        ("scopes", "scopes"),
        ("policy", "policy"),
        ("active", "active"),
        ("revoked", "revoked"),
        ("refreshes", "refresh_count"),
    ] {
        let _ = writeln!(out, "<div><dt>{label}</dt><dd>{}</dd></div>", cell(&s[key]));
    }
    for (label, key) in [("created", "created_at"), ("expires", "expires_at")] {
        let _ = writeln!(out, "<div><dt>{label}</dt><dd>{}</dd></div>", time(&s[key]));
    }
    out.push_str("</dl>\n");
    if s["active"] == Value::Bool(true) {
        out.push_str(&revoke_button(live, sid, back));
    }
    out.push_str("</section>\n");
    out
}

/// UNIX seconds as UTC date and time (the admin may be anywhere; the logs are in UTC too).
fn time(value: &Value) -> String {
    let Some(secs) = value.as_u64() else {
        return "–".to_owned();
    };
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn done_notice(query: &Query) -> Option<Notice> {
    let text = match query.get("done")? {
        "revoked" => "Session revoked: its tokens are refused from now on.",
        "revoked-client" => "Every token of the client is revoked.",
        _ => return None,
    };
    Some(Notice::Done(text.to_owned()))
}

/// The list a change's form was on, as a query string: where the page goes back to.
fn list_query(form: &Form) -> String {
    format!(
        "api={}&client={}&user={}",
        q(form.get("api").unwrap_or("")),
        q(form.get("client").unwrap_or("")),
        q(form.get("user").unwrap_or(""))
    )
}

/// A change to sessions through the admin API (`DELETE path`): back to the list the form was on,
/// with the `done` notice, or that list with the API's refusal.
async fn change(
    gateway: &Gateway,
    live: &Live,
    form: &Form,
    path: &str,
    done: &str,
) -> Response<Body> {
    let answer = api(gateway, Method::DELETE, path, None).await;
    if !answer.ok() {
        let query = Query::parse(Some(&list_query(form)));
        let outcome = Some((answer.status, Notice::Error(answer.error())));
        return page(gateway, live, &query, outcome).await;
    }
    redirect(&format!("/ui/sessions?{}&done={done}", list_query(form)))
}

pub(super) async fn revoke(gateway: &Gateway, live: &Live, form: &Form) -> Response<Body> {
    let sid = form.get("sid").unwrap_or("");
    let path = format!("/sessions/{}", seg(sid));
    change(gateway, live, form, &path, "revoked").await
}

pub(super) async fn revoke_client(gateway: &Gateway, live: &Live, form: &Form) -> Response<Body> {
    let api_id = form.get("api").unwrap_or("");
    let client = form.get("client").unwrap_or("");
    let path = format!("/apis/{}/clients/{}/sessions", seg(api_id), seg(client));
    change(gateway, live, form, &path, "revoked-client").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(&Value::from(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            time(&Value::from(1_764_777_600u64)),
            "2025-12-03 16:00:00 UTC"
        );
        assert_eq!(
            time(&Value::from(951_782_400u64)),
            "2000-02-29 00:00:00 UTC"
        );
        assert_eq!(time(&Value::Null), "–");
    }
}
