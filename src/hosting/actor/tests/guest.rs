//! The console password through the actor: set in a running guest by its agent and only
//! then recorded; refused while the VM is not running; a silent agent changes nothing; a
//! sleeping VM is woken first.

use super::*;

impl Rig {
    async fn console_password(
        &self,
        id: HostingId,
        crypted: &str,
    ) -> Result<Hosting, HostingError> {
        let (reply, answer) = oneshot::channel();
        self.ctx
            .registry
            .sender(id)
            .expect("actor")
            .send(Command::ConsolePassword {
                crypted: crypted.into(),
                reply,
            })
            .await
            .expect("send");
        answer.await.expect("answer")
    }

    fn password_hash(&self, id: HostingId) -> Option<String> {
        self.store
            .hosting(id)
            .expect("store")
            .and_then(|h| h.console_password_hash)
    }
}

#[tokio::test(start_paused = true)]
async fn a_console_password_is_set_by_the_agent_then_recorded() {
    let r = rig(1);
    r.fx.w().answers = (true, true);
    let h = r.create("sara");
    r.until_state(h.id, HostingState::Running).await;

    // A silent agent: an error, and the record keeps what it had.
    r.fx.w().fail.insert("agent");
    let e = r
        .console_password(h.id, "$6$a$one")
        .await
        .expect_err("agent");
    assert!(matches!(e, HostingError::GuestAgent), "{e:?}");
    assert_eq!(r.password_hash(h.id), None);

    r.fx.w().fail.clear();
    let got = r.console_password(h.id, "$6$a$two").await.expect("set");
    assert_eq!(got.console_password_hash.as_deref(), Some("$6$a$two"));
    assert_eq!(r.password_hash(h.id).as_deref(), Some("$6$a$two"));
    assert!(r.fx.w().log.contains(&"password $6$a$two".to_owned()));

    // Asleep: woken first.
    r.ctx
        .registry
        .sender(h.id)
        .expect("actor")
        .send(Command::SetSleep {
            enabled: true,
            reply: oneshot::channel().0,
        })
        .await
        .expect("send");
    r.until("asleep", || {
        r.store
            .hosting(h.id)
            .expect("store")
            .is_some_and(|h| h.asleep)
    })
    .await;
    r.console_password(h.id, "$6$a$three").await.expect("set");
    assert_eq!(r.state(h.id), Some(HostingState::Running));
    let log = r.fx.w().log.clone();
    let resume = log.iter().rposition(|l| l == "qmp resume").expect("woken");
    let set = log
        .iter()
        .rposition(|l| l == "password $6$a$three")
        .expect("set");
    assert!(resume < set, "{log:?}");

    // Stopped: refused, nothing asked of the agent.
    r.act(h.id, Action::Stop).await.expect("stop");
    let before = r.fx.w().log.len();
    let e = r
        .console_password(h.id, "$6$a$four")
        .await
        .expect_err("stopped");
    assert!(
        matches!(
            e,
            HostingError::InvalidState {
                state: "stopped",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(r.fx.w().log.len(), before);
    assert_eq!(r.password_hash(h.id).as_deref(), Some("$6$a$three"));
}
