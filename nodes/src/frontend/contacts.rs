//! The contact list over SIP: a persistent write, carried as a PUBLISH for the event package
//! `vnd-poolchaos-contacts` (rsip knows no SERVICE method, which Lync uses for this).
//!
//! Request: `PUBLISH sip:<user>@<domain>` from that user, `Event: vnd-poolchaos-contacts`,
//! `Content-Type: application/vnd.poolchaos.contacts`, a body of commands, one per line, applied in order and all
//! or none: `add <uri>`, `remove <uri>`, `list` (an empty body lists too). A URI starts with `sip:`, `sips:` or
//! `tel:`. Answer: `200 OK` whose body is the whole list after the writes, one URI per line, same content type;
//! `400 Bad Contact List Command` names nothing written.

use rsip::{Request, Response};

use super::server::{FrontEnd, NotCommitted};
use super::store::{now_unix_ms, Write};
use crate::sip::message::{self, header, user_of};
use crate::sip::Peer;

/// The event package of contact list writes.
pub const EVENT: &str = "vnd-poolchaos-contacts";
/// Body type of requests and answers.
pub const CONTENT_TYPE: &str = "application/vnd.poolchaos.contacts";

/// Whether a PUBLISH is a contact list write.
pub fn is_contacts(request: &Request) -> bool {
    header(&request.headers, "Event").is_some_and(|e| {
        e.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case(EVENT)
    })
}

/// One command of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Add(String),
    Remove(String),
    List,
}

/// Parses a request body into commands; `None` when any line is not a command.
pub fn parse(body: &str) -> Option<Vec<Command>> {
    let valid_uri = |u: &str| {
        ["sip:", "sips:", "tel:"].iter().any(|s| u.starts_with(s))
            && !u.contains(char::is_whitespace)
    };
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (verb, argument) = line
                .split_once(char::is_whitespace)
                .map(|(v, a)| (v, a.trim()))
                .unwrap_or((line, ""));
            match verb.to_ascii_lowercase().as_str() {
                "add" if valid_uri(argument) => Some(Command::Add(argument.to_owned())),
                "remove" if valid_uri(argument) => Some(Command::Remove(argument.to_owned())),
                "list" if argument.is_empty() => Some(Command::List),
                _ => None,
            }
        })
        .collect()
}

/// Answers a contact list PUBLISH.
pub async fn handle(fe: &FrontEnd, request: &Request, peer: &Peer) -> Response {
    let request_uri = request.uri.to_string();
    let Some(user) = user_of(&request_uri).map(str::to_owned) else {
        return message::response(request, 404, "Not Found");
    };
    if let Err(refusal) = fe.authenticate(request, peer, &user) {
        return refusal;
    }
    if FrontEnd::sender(request).as_deref() != Some(user.as_str()) {
        return message::response(request, 403, "Forbidden (Only Your Own Contact List)");
    }
    let Some(commands) = std::str::from_utf8(&request.body).ok().and_then(parse) else {
        return message::response(request, 400, "Bad Contact List Command");
    };
    let now = now_unix_ms();
    let writes: Vec<Write> = commands
        .into_iter()
        .filter_map(|command| match command {
            Command::Add(contact) => Some(Write::ContactAdd {
                user: user.clone(),
                contact,
            }),
            Command::Remove(contact) => Some(Write::ContactRemove {
                user: user.clone(),
                contact,
            }),
            Command::List => None,
        })
        .collect();
    // A list only reads; writes are applied in order, together, at the user's home.
    let view = if writes.is_empty() {
        fe.view(&user, now).await.map_err(NotCommitted::from)
    } else {
        fe.commit(&user, writes, now).await.map(|(_, view)| view)
    };
    let view = match view {
        Ok(view) => view,
        Err(refusal) => return refusal.response(request),
    };
    let mut response = message::response(request, 200, "OK");
    message::push(&mut response.headers, "Content-Type", CONTENT_TYPE);
    response.body = view
        .contacts
        .iter()
        .map(|c| format!("{c}\r\n"))
        .collect::<String>()
        .into_bytes();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_all_or_nothing() {
        assert_eq!(
            parse("add sip:bob@pool\r\nremove sip:carol@pool\nlist\n"),
            Some(vec![
                Command::Add("sip:bob@pool".into()),
                Command::Remove("sip:carol@pool".into()),
                Command::List
            ])
        );
        assert_eq!(parse(""), Some(vec![]));
        assert_eq!(parse("add sip:bob@pool\nadd bob"), None);
        assert_eq!(parse("delete sip:bob@pool"), None);
    }
}
