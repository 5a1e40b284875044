//! The contact list over SIP: a persistent write, carried as a PUBLISH for the event package
//! `vnd-poolchaos-contacts` (rsip knows no SERVICE method, which Lync uses for this).
//!
//! Request: `PUBLISH sip:<user>@<domain>` from that user, `Event: vnd-poolchaos-contacts`,
//! `Content-Type: application/vnd.poolchaos.contacts`, a body of commands, one per line, applied in order and all
//! or none: `add <uri>`, `remove <uri>`, `list` (an empty body lists too). A URI starts with `sip:`, `sips:` or
//! `tel:`. Answer: `200 OK` whose body is the whole list after the writes, one URI per line, same content type;
//! `400 Bad Contact List Command` names nothing written. A list holds at most `contacts_max` contacts (1,000 by
//! default, as Lync), and never more than its answer can carry within the transport's body limit: the request whose
//! adds would go beyond gets `403 Contact List Full` and writes nothing (checked against the list at the user's
//! home before the writes; two requests of one user racing at the limit may pass it by one each).

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
    if commands.iter().any(|c| matches!(c, Command::Add(_))) {
        let view = match fe.view(&user, now).await {
            Ok(view) => view,
            Err(refusal) => return refusal.response(request),
        };
        let body_max = fe.config.transport.limits.body_bytes_max;
        if let Err(why) = within_limits(&view.contacts, &commands, fe.config.contacts_max, body_max)
        {
            let mut refused = message::response(request, 403, "Contact List Full");
            message::push(
                &mut refused.headers,
                "Warning",
                format!("399 poolnode \"{why}\""),
            );
            return refused;
        }
    }
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

/// Whether `list` after `commands`, applied in order, stays within `contacts_max` contacts and within `body_max`
/// bytes as an answer's body; the reason when not.
pub fn within_limits(
    list: &[String],
    commands: &[Command],
    contacts_max: usize,
    body_max: usize,
) -> Result<(), String> {
    let mut after: Vec<&str> = list.iter().map(String::as_str).collect();
    for command in commands {
        match command {
            Command::Add(c) if !after.contains(&c.as_str()) => after.push(c),
            Command::Remove(c) => after.retain(|x| x != c),
            _ => {}
        }
    }
    let bytes: usize = after.iter().map(|c| c.len() + 2).sum();
    if after.len() > contacts_max {
        Err(format!(
            "a contact list holds at most {contacts_max} contacts"
        ))
    } else if bytes > body_max {
        Err(format!(
            "the contact list would not fit in one answer ({bytes} bytes, at most {body_max})"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_stays_within_its_count_and_its_answers_size() {
        let list: Vec<String> = (0..3).map(|i| format!("sip:c{i}@p")).collect();
        let add = |c: &str| Command::Add(c.to_owned());
        // Room for one more.
        assert!(within_limits(&list, &[add("sip:x@p")], 4, 1000).is_ok());
        // A second one is over the count; adding one already there, or removing first, is not.
        assert!(
            within_limits(&list, &[add("sip:x@p"), add("sip:y@p")], 4, 1000)
                .unwrap_err()
                .contains("at most 4 contacts")
        );
        assert!(within_limits(&list, &[add("sip:c0@p"), add("sip:x@p")], 4, 1000).is_ok());
        assert!(within_limits(
            &list,
            &[
                Command::Remove("sip:c0@p".into()),
                add("sip:x@p"),
                add("sip:y@p")
            ],
            4,
            1000
        )
        .is_ok());
        // Within the count but not within one answer: 3 × 9 bytes + 9 > 30.
        assert!(within_limits(&list, &[add("sip:x@p")], 10, 30)
            .unwrap_err()
            .contains("would not fit"));
    }

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
