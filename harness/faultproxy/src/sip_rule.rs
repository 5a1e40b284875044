//! How the SIP toxics of a direction judge one whole message: which toxic's rule matches it,
//! whether the selection (`every`, `first`, `probability`) picks it, and what becomes of it.
//!
//! The toxics are asked in the proxy's order and the first that picks a message decides; the
//! ones after it neither see nor count that message. A message that is not SIP passes.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use crate::kind::{SipAction, SipRule, ToxicKind};
use crate::sip::{Head, StartLine};
use crate::toxic::DirectionToxics;

/// What becomes of one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Delivered this long after it arrived.
    Delay(Duration),
    /// Not delivered; these bytes go back to its sender.
    Reply(Bytes),
    /// Kept by the toxic until it is removed.
    Hold,
}

impl SipRule {
    /// Whether every matcher of the rule holds for `head`.
    pub fn matches(&self, head: &Head) -> bool {
        if let Some(method) = &self.method {
            if !head.is_request(method) {
                return false;
            }
        }
        if let Some(status) = self.status {
            if head.start != (StartLine::Response { status }) {
                return false;
            }
        }
        if let Some(cseq_method) = &self.cseq_method {
            if !head
                .cseq_method()
                .is_some_and(|m| m.eq_ignore_ascii_case(cseq_method))
            {
                return false;
            }
        }
        if let Some(header) = &self.header {
            if !head
                .values(&header.name)
                .any(|value| value.contains(&header.contains))
            {
                return false;
            }
        }
        true
    }
}

impl DirectionToxics {
    /// Judges one whole message with the SIP toxics that act on this direction.
    pub fn judge(&mut self, message: &Bytes) -> Verdict {
        let mut head = None;
        for active in self.active.iter_mut().filter(|active| active.applies) {
            let ToxicKind::Sip { rule, action } = &active.toxic.kind else {
                continue;
            };
            if head.is_none() {
                head = Head::parse(message);
                if head.is_none() {
                    return Verdict::Pass;
                }
            }
            let head = head.as_ref().expect("parsed above");
            if !rule.matches(head) {
                continue;
            }
            if let SipAction::Respond { .. } = action {
                // Only requests have responses, and ACK has none.
                if !matches!(&head.start, StartLine::Request { .. }) || head.is_request("ACK") {
                    continue;
                }
            }
            active.matched += 1;
            let picked = active.matched % rule.every == 0
                && (rule.first == 0 || active.picked < rule.first)
                && (rule.probability >= 1.0 || active.rng.gen::<f64>() < rule.probability);
            if !picked {
                continue;
            }
            active.picked += 1;
            active.toxic.picked.add();
            return match action {
                SipAction::Drop => Verdict::Drop,
                SipAction::Delay { delay_ms } => Verdict::Delay(Duration::from_millis(*delay_ms)),
                SipAction::Hold => {
                    active.held.push(message.clone());
                    Verdict::Hold
                }
                SipAction::Respond {
                    code,
                    reason,
                    retry_after_s,
                } => {
                    let tag = format!("fp{:08x}", active.rng.gen::<u32>());
                    Verdict::Reply(head.response(*code, reason, &tag, *retry_after_s))
                }
            };
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::model::{Stream, Toxic};
    use crate::toxic::DirectionKey;

    fn direction(toxic: &str) -> DirectionToxics {
        let toxic = Toxic::parse_new(toxic.as_bytes()).unwrap();
        let mut direction = DirectionToxics::new(DirectionKey {
            seed: 1,
            proxy: "p".into(),
            connection_ordinal: 0,
            stream: Stream::Downstream,
        });
        direction.sync(&[toxic], Instant::now());
        direction
    }

    fn message(start: &str, cseq: &str) -> Bytes {
        Bytes::from(format!(
            "{start}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:a@h>\r\nCall-ID: c\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    #[test]
    fn drop_takes_the_first_n_matching_only() {
        let mut dir = direction(
            r#"{"type":"sip_drop","attributes":{"status":200,"cseq_method":"REGISTER","first":2}}"#,
        );
        let ok_register = message("SIP/2.0 200 OK", "1 REGISTER");
        let ok_invite = message("SIP/2.0 200 OK", "1 INVITE");
        assert_eq!(dir.judge(&ok_invite), Verdict::Pass);
        assert_eq!(dir.judge(&ok_register), Verdict::Drop);
        assert_eq!(dir.judge(&ok_register), Verdict::Drop);
        assert_eq!(dir.judge(&ok_register), Verdict::Pass);
    }

    #[test]
    fn respond_answers_every_third_request_and_never_ack() {
        let mut dir = direction(
            r#"{"type":"sip_respond","attributes":{"every":3,"code":503,"retry_after":7}}"#,
        );
        let request = message("MESSAGE sip:b@h SIP/2.0", "1 MESSAGE");
        let verdicts: Vec<_> = (0..6)
            .map(|_| matches!(dir.judge(&request), Verdict::Reply(_)))
            .collect();
        assert_eq!(verdicts, [false, false, true, false, false, true]);
        let ack = message("ACK sip:b@h SIP/2.0", "1 ACK");
        for _ in 0..6 {
            assert_eq!(dir.judge(&ack), Verdict::Pass);
        }
    }

    #[test]
    fn header_matcher_looks_into_values() {
        let mut dir =
            direction(r#"{"type":"sip_drop","attributes":{"header":{"name":"i","contains":"c"}}}"#);
        assert_eq!(
            dir.judge(&message("OPTIONS sip:h SIP/2.0", "1 OPTIONS")),
            Verdict::Drop
        );
        assert_eq!(dir.judge(&Bytes::from_static(b"not sip")), Verdict::Pass);
    }
}
