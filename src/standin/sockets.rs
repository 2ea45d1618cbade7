//! Socket Mode's registry: the tickets issued, the connections that take envelopes
//! and whose turn is next, the envelopes waiting for their ack, and the acks
//! received. Plain data behind the stand-in's lock; `socket` serves the connections.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::auth::APP_ID;

/// An acknowledgement an app sent over a socket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ack {
    /// The envelope acknowledged.
    pub envelope_id: String,
    /// The `payload` sent with the ack, if any.
    pub payload: Option<Value>,
    /// Which connection it came on (they are numbered from 1 as they open).
    pub connection: u64,
    /// When it arrived, since the stand-in started.
    pub at: Duration,
}

/// What a connection's task is told to do.
#[derive(Debug)]
pub(super) enum Order {
    /// Send this text frame.
    Frame(String),
    /// Send this `disconnect` frame, say when it is written, and close the
    /// connection `RETIRE_AFTER` later if the app has not closed it by then.
    Disconnect(String, oneshot::Sender<()>),
    /// Send this frame, then close the connection.
    Close(String),
    /// Cut the TCP connection: no close frame, a reset.
    Cut,
}

/// A connection that takes envelopes.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) id: u64,
    pub(super) orders: mpsc::UnboundedSender<Order>,
}

/// The Socket Mode part of the stand-in's state.
#[derive(Debug)]
pub(super) struct Sockets {
    /// `ws://127.0.0.1:PORT/link/`: where tickets are redeemed.
    pub(super) url: String,
    /// Issued and not yet used.
    pub(super) tickets: HashSet<String>,
    /// Connections that take envelopes, in the order they opened.
    pub(super) live: Vec<Link>,
    /// Successful handshakes so far.
    pub(super) opened: usize,
    /// Which live connection gets the next envelope.
    pub(super) turn: usize,
    /// Pick the connection at random instead of in turn.
    pub(super) random: bool,
    /// Envelopes sent and not yet acknowledged: who to tell when the ack comes.
    pub(super) waiting: HashMap<String, oneshot::Sender<Instant>>,
    pub(super) acks: Vec<Ack>,
}

impl Sockets {
    /// The sockets of a server listening at `addr`; envelopes go to the live
    /// connections in turn, or to one at random.
    pub fn new(addr: SocketAddr, random: bool) -> Self {
        Sockets {
            url: format!("ws://{addr}/link/"),
            tickets: HashSet::new(),
            live: Vec::new(),
            opened: 0,
            turn: 0,
            random,
            waiting: HashMap::new(),
            acks: Vec::new(),
        }
    }

    /// A new single-use ticket, as the URL `apps.connections.open` answers.
    pub fn issue_url(&mut self) -> String {
        let ticket = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let url = format!("{}?ticket={ticket}&app_id={APP_ID}", self.url);
        self.tickets.insert(ticket);
        url
    }

    /// Whether any connection takes envelopes.
    pub fn any_live(&self) -> bool {
        !self.live.is_empty()
    }

    /// Sends an envelope to the next live connection in turn (or one at random). The receiver learns
    /// when its ack arrived; `None`: no live connection.
    pub fn send(&mut self, envelope_id: &str, frame: String) -> Option<oneshot::Receiver<Instant>> {
        while !self.live.is_empty() {
            let i = if self.random {
                fastrand::usize(..self.live.len())
            } else {
                self.turn % self.live.len()
            };
            if self.live[i]
                .orders
                .send(Order::Frame(frame.clone()))
                .is_ok()
            {
                self.turn = i + 1;
                let (tx, rx) = oneshot::channel();
                self.waiting.insert(envelope_id.to_string(), tx);
                return Some(rx);
            }
            // Its task is gone: the connection closed a moment ago.
            self.live.remove(i);
        }
        None
    }

    /// Stops waiting for the ack of `envelope_id` (it is still recorded if it comes).
    pub fn forget(&mut self, envelope_id: &str) {
        self.waiting.remove(envelope_id);
    }

    /// Gives every live connection an order; none of them takes envelopes any more.
    pub(super) fn order_all(&mut self, mut order: impl FnMut() -> Order) {
        for link in self.live.drain(..) {
            let _ = link.orders.send(order());
        }
    }

    pub(super) fn register(&mut self) -> (u64, mpsc::UnboundedReceiver<Order>) {
        self.opened += 1;
        let id = self.opened as u64;
        let (tx, rx) = mpsc::unbounded_channel();
        self.live.push(Link { id, orders: tx });
        (id, rx)
    }

    pub(super) fn unregister(&mut self, id: u64) {
        self.live.retain(|l| l.id != id);
    }
}
