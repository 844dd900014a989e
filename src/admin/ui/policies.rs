//! Policies: list (policies.yaml and stored), create, edit, delete a stored one.

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

pub(super) async fn page(
    gateway: &Gateway,
    live: &Live,
    query: &Query,
    outcome: Option<(StatusCode, Notice)>,
) -> Response<Body> {
    let (status, notice) = match outcome {
        Some((status, notice)) => (status, Some(notice)),
        None => (StatusCode::OK, done_notice(query)),
    };
    let list = api(gateway, Method::GET, "/policies", None).await;
    if !list.ok() {
        let notice = Notice::Error(list.error());
        return page_response(
            list.status,
            layout("Policies", Nav::Policies, live, Some(&notice), ""),
        );
    }
    let mut content = String::from(
        "<table>\n<caption>Policies</caption>\n<thead><tr><th scope=\"col\">id</th><th scope=\"col\">rate limit</th><th scope=\"col\">quota</th><th scope=\"col\">scopes</th><th scope=\"col\">access</th><th scope=\"col\">source</th><th scope=\"col\">actions</th></tr></thead>\n<tbody>\n",
    );
    let empty = Vec::new();
    for p in list.body["policies"].as_array().unwrap_or(&empty) {
        let id = p["id"].as_str().unwrap_or("");
        let read_only = p["read_only"].as_bool().unwrap_or(true);
        let actions = if read_only {
            "<span class=\"muted\">policies.yaml: read-only</span>".to_owned()
        } else {
            format!(
                "<a href=\"/ui/policies/edit?id={}\" aria-label=\"Edit policy {}\">Edit</a> \
                 <form method=\"post\" action=\"/ui/policies/delete\" class=\"inline\" data-confirm=\"Delete policy {}?\">{}<input type=\"hidden\" name=\"id\" value=\"{}\">\
                 <label class=\"check\"><input type=\"checkbox\" name=\"force\" value=\"true\"> even if clients use it</label> \
                 <button type=\"submit\" class=\"danger\" aria-label=\"Delete policy {}\">Delete</button></form>",
                q(id),
                escape(id),
                escape(id),
                csrf_field(live),
                escape(id),
                escape(id)
            )
        };
        let _ = writeln!(
            content,
            "<tr data-policy=\"{}\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"actions\">{actions}</td></tr>",
            escape(id),
            escape(id),
            rate_text(&p["rate_limit"]),
            quota_text(&p["quota"]),
            cell(&p["scopes"]),
            cell(&p["access"]),
            cell(&p["source"]),
        );
    }
    content.push_str("</tbody>\n</table>\n<section>\n<h2>New policy</h2>\n");
    content.push_str(&policy_form(live, None));
    content.push_str("</section>\n");
    page_response(
        status,
        layout("Policies", Nav::Policies, live, notice.as_ref(), &content),
    )
}

fn rate_text(rate: &Value) -> String {
    if rate.is_null() {
        return "–".to_owned();
    }
    format!("{} per {}", cell(&rate["rate"]), cell(&rate["per"]))
}

fn quota_text(quota: &Value) -> String {
    if quota.is_null() {
        return "–".to_owned();
    }
    format!("{} per {}", cell(&quota["max"]), cell(&quota["period"]))
}

/// The create form (`policy` absent) or the edit form of a stored policy.
fn policy_form(live: &Live, policy: Option<&Value>) -> String {
    let empty = Value::Null;
    let p = policy.unwrap_or(&empty);
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => escape(s),
        other => escape(&other.to_string()),
    };
    let list = |v: &Value| {
        v.as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(escape)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let on_error = p["rate_limit"]["on_storage_error"]
        .as_str()
        .unwrap_or("local");
    let mut options = String::new();
    for choice in ["local", "allow", "deny"] {
        let _ = write!(
            options,
            "<option value=\"{choice}\"{}>{choice}</option>",
            if choice == on_error { " selected" } else { "" }
        );
    }
    let id_field = match policy {
        Some(_) => format!(
            "<input type=\"hidden\" name=\"id\" value=\"{0}\"><input type=\"hidden\" name=\"edit\" value=\"true\">\n<p>Policy <code>{0}</code></p>\n",
            text(&p["id"])
        ),
        None => {
            "<label for=\"id\">id</label>\n<input id=\"id\" name=\"id\" type=\"text\" required>\n"
                .to_owned()
        }
    };
    format!(
        "<form method=\"post\" action=\"/ui/policies/save\" class=\"stacked\">\n{csrf}{id_field}\
         <fieldset>\n<legend>Rate limit <span class=\"muted\">(blank: none)</span></legend>\n\
         <label for=\"rate\">Requests</label>\n<input id=\"rate\" name=\"rate\" type=\"number\" min=\"1\" inputmode=\"numeric\" value=\"{rate}\">\n\
         <label for=\"per\">per <span class=\"muted\">(duration: 1s, 1m, 1h)</span></label>\n<input id=\"per\" name=\"per\" type=\"text\" value=\"{per}\">\n\
         <label for=\"on_storage_error\">When Redis is unreachable</label>\n<select id=\"on_storage_error\" name=\"on_storage_error\">{options}</select>\n</fieldset>\n\
         <fieldset>\n<legend>Quota <span class=\"muted\">(blank: none)</span></legend>\n\
         <label for=\"quota_max\">Requests</label>\n<input id=\"quota_max\" name=\"quota_max\" type=\"number\" min=\"1\" inputmode=\"numeric\" value=\"{max}\">\n\
         <label for=\"quota_period\">per <span class=\"muted\">(duration: 1h, 1d)</span></label>\n<input id=\"quota_period\" name=\"quota_period\" type=\"text\" value=\"{period}\">\n</fieldset>\n\
         <label for=\"scopes\">Scopes <span class=\"muted\">(separated by spaces; blank: no narrowing)</span></label>\n<input id=\"scopes\" name=\"scopes\" type=\"text\" value=\"{scopes}\">\n\
         <label for=\"access\">Other APIs the tokens may call <span class=\"muted\">(API ids, separated by spaces)</span></label>\n<input id=\"access\" name=\"access\" type=\"text\" value=\"{access}\">\n\
         <button type=\"submit\">{button}</button>\n</form>\n",
        csrf = csrf_field(live),
        rate = text(&p["rate_limit"]["rate"]),
        per = text(&p["rate_limit"]["per"]),
        max = text(&p["quota"]["max"]),
        period = text(&p["quota"]["period"]),
        scopes = list(&p["scopes"]),
        access = list(&p["access"]),
        button = if policy.is_some() {
            "Save policy"
        } else {
            "Create policy"
        },
    )
}

pub(super) async fn edit_page(gateway: &Gateway, live: &Live, query: &Query) -> Response<Body> {
    let id = query.get("id").unwrap_or("");
    let answer = api(
        gateway,
        Method::GET,
        &format!("/policies/{}", seg(id)),
        None,
    )
    .await;
    if !answer.ok() {
        return refused(gateway, live, &answer).await;
    }
    edit_response(live, StatusCode::OK, &answer.body, None)
}

fn edit_response(
    live: &Live,
    status: StatusCode,
    policy: &Value,
    notice: Option<Notice>,
) -> Response<Body> {
    let content = format!(
        "{}<p><a href=\"/ui/policies\">Back to the policies</a></p>\n",
        policy_form(live, Some(policy))
    );
    page_response(
        status,
        layout(
            "Edit policy",
            Nav::Policies,
            live,
            notice.as_ref(),
            &content,
        ),
    )
}

/// The policy document (a policies.yaml entry as JSON) the form describes; a number field that is
/// not a number is passed on as text, so the admin API's validation names the field.
fn document(form: &Form) -> Value {
    let number = |v: &str| {
        v.parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(v))
    };
    let mut body = Map::new();
    if let Some(id) = form.text("id") {
        body.insert("id".into(), json!(id));
    }
    if form.text("rate").is_some() || form.text("per").is_some() {
        body.insert(
            "rate_limit".into(),
            json!({
                "rate": number(form.text("rate").unwrap_or("")),
                "per": form.text("per").unwrap_or(""),
                "on_storage_error": form.text("on_storage_error").unwrap_or("local"),
            }),
        );
    }
    if form.text("quota_max").is_some() || form.text("quota_period").is_some() {
        body.insert(
            "quota".into(),
            json!({
                "max": number(form.text("quota_max").unwrap_or("")),
                "period": form.text("quota_period").unwrap_or(""),
            }),
        );
    }
    if let Some(scopes) = form.text("scopes") {
        body.insert(
            "scopes".into(),
            json!(scopes.split_whitespace().collect::<Vec<_>>()),
        );
    }
    let access: Vec<&str> = form
        .get("access")
        .unwrap_or("")
        .split([' ', ','])
        .filter(|a| !a.is_empty())
        .collect();
    body.insert("access".into(), json!(access));
    Value::Object(body)
}

pub(super) async fn save(gateway: &Gateway, live: &Live, form: &Form) -> Response<Body> {
    let id = form.text("id").unwrap_or("");
    let editing = form.get("edit") == Some("true");
    let doc = document(form);
    let answer = if editing {
        api(
            gateway,
            Method::PUT,
            &format!("/policies/{}", seg(id)),
            Some(&doc),
        )
        .await
    } else {
        api(gateway, Method::POST, "/policies", Some(&doc)).await
    };
    if answer.ok() {
        return redirect(&format!(
            "/ui/policies?done={}",
            if editing { "saved" } else { "created" }
        ));
    }
    if editing {
        // The form again, with what was typed, so nothing is lost to a typo.
        let mut shown = doc;
        shown["id"] = json!(id);
        let notice = Notice::Error(answer.error());
        return edit_response(live, answer.status, &shown, Some(notice));
    }
    refused(gateway, live, &answer).await
}

pub(super) async fn delete(gateway: &Gateway, live: &Live, form: &Form) -> Response<Body> {
    let id = form.get("id").unwrap_or("");
    let force = form.get("force") == Some("true");
    let path = format!(
        "/policies/{}{}",
        seg(id),
        if force { "?force=true" } else { "" }
    );
    let answer = api(gateway, Method::DELETE, &path, None).await;
    if !answer.ok() {
        return refused(gateway, live, &answer).await;
    }
    redirect("/ui/policies?done=deleted")
}

/// The admin API refused: its message and status, on the list of policies.
async fn refused(gateway: &Gateway, live: &Live, answer: &Answer) -> Response<Body> {
    let outcome = Some((answer.status, Notice::Error(answer.error())));
    page(gateway, live, &Query::parse(None), outcome).await
}

fn done_notice(query: &Query) -> Option<Notice> {
    let text = match query.get("done")? {
        "created" => "Policy created.",
        "saved" => "Policy saved: it applies to existing sessions at once.",
        "deleted" => "Policy deleted.",
        _ => return None,
    };
    Some(Notice::Done(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_a_policy_document() {
        let form = Form::parse(Some(
            "id=gold&rate=10&per=1s&on_storage_error=deny&quota_max=&quota_period=&scopes=&access=a+b,c",
        ));
        assert_eq!(
            document(&form),
            json!({
                "id": "gold",
                "rate_limit": {"rate": 10, "per": "1s", "on_storage_error": "deny"},
                "access": ["a", "b", "c"],
            })
        );
        // Not a number: passed on, for the API to name the field.
        let form = Form::parse(Some(
            "id=x&quota_max=lots&quota_period=1d&scopes=read+write",
        ));
        assert_eq!(
            document(&form),
            json!({
                "id": "x",
                "quota": {"max": "lots", "period": "1d"},
                "scopes": ["read", "write"],
                "access": [],
            })
        );
    }
}
