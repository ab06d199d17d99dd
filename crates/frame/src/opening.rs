//! How the two ends agree on a connection's opening in `datagram-fec` mode,
//! sans I/O.
//!
//! There the opening travels twice: on the connection's QUIC stream, and as
//! the connection's first FEC item ([`crate::fec_items::ItemKind::Open`]).
//! Whichever copy arrives first opens (or refuses) the connection, so a
//! lost stream packet costs no retransmission timeout; the other copy must
//! then be the same message, or the connection ends. Each path carries one
//! copy at most.
//!
//! The sender's opening is `Open`; the receiver answers `Opened` or
//! `Refused`.

use crate::Msg;
use crate::protocol::ProtoError;

/// Where a copy of the opening came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The connection's QUIC stream.
    Stream,
    /// The connection's first FEC item.
    Item,
}

impl Path {
    fn index(self) -> usize {
        match self {
            Path::Stream => 0,
            Path::Item => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Path::Stream => "stream",
            Path::Item => "FEC item",
        }
    }
}

/// What a copy of the opening means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpeningStep {
    /// The first copy: act on it (open the connection, or learn the
    /// receiver's answer).
    First(Msg),
    /// The second copy, equal to the first: nothing to do.
    Agreed,
}

/// The peer's opening of one connection, as seen by this end.
#[derive(Debug, Clone)]
pub struct Opening {
    /// This end is the receiver: the peer opens with `Open`.
    receiver: bool,
    first: Option<Msg>,
    seen: [bool; 2],
}

impl Opening {
    /// The receiver's side: the peer's opening is `Open`.
    pub fn receiver() -> Self {
        Opening {
            receiver: true,
            first: None,
            seen: [false; 2],
        }
    }

    /// The sender's side: the peer's opening is `Opened` or `Refused`.
    pub fn sender() -> Self {
        Opening {
            receiver: false,
            ..Opening::receiver()
        }
    }

    /// The first copy, once one came.
    pub fn first(&self) -> Option<&Msg> {
        self.first.as_ref()
    }

    /// Whether `path` still has its copy to deliver.
    pub fn awaits(&self, path: Path) -> bool {
        !self.seen[path.index()]
    }

    /// A copy of the peer's opening arrived on `path`. A message that opens
    /// nothing from this peer, a second copy on one path, or a copy unlike
    /// the first is a [`ProtoError::Violation`].
    pub fn handle(&mut self, path: Path, m: Msg) -> Result<OpeningStep, ProtoError> {
        let fits = match m {
            Msg::Open { .. } => self.receiver,
            Msg::Opened | Msg::Refused { .. } => !self.receiver,
            _ => false,
        };
        if !fits {
            return Err(ProtoError::Violation(format!(
                "the {} carried no {} opening",
                path.name(),
                if self.receiver {
                    "sender's"
                } else {
                    "receiver's"
                },
            )));
        }
        if std::mem::replace(&mut self.seen[path.index()], true) {
            return Err(ProtoError::Violation(format!(
                "a second opening on the {}",
                path.name()
            )));
        }
        match &self.first {
            None => {
                self.first = Some(m.clone());
                Ok(OpeningStep::First(m))
            }
            Some(first) if *first == m => Ok(OpeningStep::Agreed),
            Some(_) => Err(ProtoError::Violation(
                "the opening on the stream and the one in the FEC item differ".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(name: &str) -> Msg {
        Msg::Open {
            name: name.into(),
            primer_check: 1,
            window: 2,
            keep: 3,
            lanes: 4,
        }
    }

    #[test]
    fn first_copy_wins_and_the_second_must_agree() {
        for (a, b) in [(Path::Stream, Path::Item), (Path::Item, Path::Stream)] {
            let mut o = Opening::receiver();
            assert!(o.awaits(a) && o.awaits(b));
            assert_eq!(
                o.handle(a, open("web")),
                Ok(OpeningStep::First(open("web")))
            );
            assert!(!o.awaits(a) && o.awaits(b));
            assert_eq!(o.first(), Some(&open("web")));
            assert_eq!(o.handle(b, open("web")), Ok(OpeningStep::Agreed));
            // Each path once.
            assert!(o.handle(b, open("web")).is_err());
        }
        let mut o = Opening::sender();
        assert_eq!(
            o.handle(Path::Item, Msg::Opened),
            Ok(OpeningStep::First(Msg::Opened))
        );
        assert_eq!(o.handle(Path::Stream, Msg::Opened), Ok(OpeningStep::Agreed));
    }

    #[test]
    fn mismatches_and_wrong_messages_are_violations() {
        let mut o = Opening::receiver();
        o.handle(Path::Item, open("web")).unwrap();
        assert!(matches!(
            o.handle(Path::Stream, open("ssh")),
            Err(ProtoError::Violation(_))
        ));
        let mut o = Opening::sender();
        o.handle(Path::Stream, Msg::Opened).unwrap();
        let refused = Msg::Refused { reason: "x".into() };
        assert!(o.handle(Path::Item, refused).is_err());
        // A receiver never opens; a sender never answers; data never opens.
        assert!(Opening::sender().handle(Path::Item, open("web")).is_err());
        assert!(Opening::receiver().handle(Path::Item, Msg::Opened).is_err());
        assert!(Opening::receiver().handle(Path::Stream, Msg::Fin).is_err());
        // A failed copy decides nothing.
        let mut o = Opening::receiver();
        assert!(o.handle(Path::Item, Msg::Fin).is_err());
        assert_eq!(o.first(), None);
    }
}
