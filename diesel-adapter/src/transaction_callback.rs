//! [`TransactionCallback`], and the cancel-safe transaction entry points both connections'
//! inherent `transaction` and `test_transaction` run: generic over the connection, whose
//! transaction state keeps its levels in [`Levels`](crate::levels::Levels).

use std::fmt::Debug;
use std::num::NonZeroU32;

use diesel::QueryResult;
use diesel::connection::InstrumentationEvent;
use diesel::result::Error as DieselError;
use diesel_async::{AsyncConnection, TransactionManager};

use crate::levels::{GuardedState, ONE};

/// A closure a transaction runs: any `async |conn| ...` (or function returning a future) that
/// takes the connection and whose future is `Send`.
///
/// It exists only to let [`LitemuxConnection::transaction`](crate::LitemuxConnection::transaction)
/// require a `Send` future while keeping closure type inference (the same device diesel-async
/// uses); you never implement it.
pub trait TransactionCallback<T, R>:
    AsyncFnOnce(T) -> R + FnOnce(T) -> <Self as TransactionCallback<T, R>>::Fut
{
    /// The future the closure returns.
    type Fut: Future<Output = R>;
}

impl<F, T, Fut, R> TransactionCallback<T, R> for F
where
    F: AsyncFnOnce(T) -> R + FnOnce(T) -> Fut,
    Fut: Future<Output = R>,
{
    type Fut = Fut;
}

/// The state diesel-async keeps for connection `C`'s transactions.
type StateOf<C> =
    <<C as AsyncConnection>::TransactionManager as TransactionManager<C>>::TransactionStateData;

/// Runs `callback` in a transaction of `conn`: committed on `Ok`, rolled back on `Err`, a
/// savepoint when already in one. Dropping the future abandons the level it opened (its guard
/// is armed from `begin` until the level has ended).
pub(crate) async fn transaction<C, R, E, F>(conn: &mut C, callback: F) -> Result<R, E>
where
    C: AsyncConnection,
    StateOf<C>: GuardedState,
    for<'r> F: AsyncFnOnce(&'r mut C) -> Result<R, E>
        + TransactionCallback<&'r mut C, Result<R, E>, Fut: Send>
        + Send,
    E: From<DieselError>,
{
    C::TransactionManager::begin_transaction(conn).await?;
    let state = conn.transaction_state();
    let level = state.depth()?.unwrap_or(ONE);
    // From here until the transaction has ended, dropping this future abandons it.
    let guard = state.guard(level);
    let result = match callback(&mut *conn).await {
        Ok(value) => match C::TransactionManager::commit_transaction(conn).await {
            Ok(()) => Ok(value),
            Err(e) => Err(E::from(e)),
        },
        Err(user_error) => match C::TransactionManager::rollback_transaction(conn).await {
            Ok(()) | Err(DieselError::BrokenTransactionManager) => Err(user_error),
            Err(rollback_error) => Err(E::from(rollback_error)),
        },
    };
    guard.disarm();
    result
}

/// Runs `f` in a transaction of `conn` that is always rolled back, and returns its value.
///
/// # Panics
/// If `f` returns an error, or the transaction cannot begin.
pub(crate) async fn test_transaction<C, R, E, F>(conn: &mut C, f: F) -> R
where
    C: AsyncConnection,
    StateOf<C>: GuardedState,
    for<'r> F: AsyncFnOnce(&'r mut C) -> Result<R, E>
        + TransactionCallback<&'r mut C, Result<R, E>, Fut: Send>
        + Send,
    E: Debug,
    R: Send,
{
    let mut value = None;
    let outcome = transaction::<C, (), DieselError, _>(conn, async |conn| {
        match f(conn).await {
            Ok(v) => value = Some(v),
            Err(e) => panic!("Transaction did not succeed: {e:?}"),
        }
        Err(DieselError::RollbackTransaction)
    })
    .await;
    match (value, outcome) {
        (Some(value), Err(DieselError::RollbackTransaction)) => value,
        (_, outcome) => panic!("Transaction did not succeed: {outcome:?}"),
    }
}

/// The depth now and the level `begin_transaction` opens, reported to diesel's
/// instrumentation as diesel's connections report it.
pub(crate) fn opening_level<C>(conn: &mut C) -> QueryResult<(Option<NonZeroU32>, NonZeroU32)>
where
    C: AsyncConnection,
    StateOf<C>: GuardedState,
{
    let depth = conn.transaction_state().depth()?;
    let level = depth.map_or(ONE, |d| d.saturating_add(1));
    conn.instrumentation()
        .on_connection_event(InstrumentationEvent::begin_transaction(level));
    Ok((depth, level))
}

/// The depth of the open transaction that is about to end, reported to diesel's
/// instrumentation as `event`; an error when none is open.
pub(crate) fn closing_level<C>(
    conn: &mut C,
    event: fn(NonZeroU32) -> InstrumentationEvent<'static>,
) -> QueryResult<NonZeroU32>
where
    C: AsyncConnection,
    StateOf<C>: GuardedState,
{
    let depth = conn
        .transaction_state()
        .depth()?
        .ok_or(DieselError::NotInTransaction)?;
    conn.instrumentation().on_connection_event(event(depth));
    Ok(depth)
}
