//! CRUD through litemux-diesel: migrations, create, read, update, delete, and transactions
//! (one that commits, one that rolls back).
//!
//! Run from the repository root: `cargo run --example diesel_crud`.

mod schema;

use diesel::result::Error;
use diesel::{BelongingToDsl, ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel_async::{AsyncConnection, RunQueryDsl};
use litemux_diesel::LitemuxConnection;
use schema::{MIGRATIONS, NewUser, Post, User, comments, posts, users};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?readers=2",
        dir.path().join("blog.db").display()
    );
    let mut conn = LitemuxConnection::establish(&url).await?;

    // Migrations run on the writer's own thread: fine on any tokio runtime.
    let applied = litemux_diesel::run_pending_migrations(conn.database(), MIGRATIONS).await?;
    println!("applied {} migrations", applied.len());

    // Create.
    let ada: User = diesel::insert_into(users::table)
        .values(NewUser {
            name: "ada",
            email: Some("ada@example.com"),
        })
        .returning(User::as_returning())
        .get_result(&mut conn)
        .await?;
    println!("created {ada:?}");

    // A transaction: a post and its first comment, all or nothing.
    let post: Post = conn
        .transaction::<_, Error, _>(async |conn| {
            let post: Post = diesel::insert_into(posts::table)
                .values((
                    posts::user_id.eq(ada.id),
                    posts::title.eq("Notes on the engine"),
                ))
                .returning(Post::as_returning())
                .get_result(conn)
                .await?;
            diesel::insert_into(comments::table)
                .values((
                    comments::post_id.eq(post.id),
                    comments::user_id.eq(ada.id),
                    comments::body.eq("first!"),
                ))
                .execute(conn)
                .await?;
            Ok(post)
        })
        .await?;
    println!("created {post:?} with a comment");

    // A transaction that fails rolls back everything it did.
    let failed = conn
        .transaction::<(), Error, _>(async |conn| {
            diesel::insert_into(users::table)
                .values(NewUser {
                    name: "grace",
                    email: None,
                })
                .execute(conn)
                .await?;
            // Same e-mail as ada: UNIQUE violation, so grace is not kept either.
            diesel::insert_into(users::table)
                .values(NewUser {
                    name: "impostor",
                    email: Some("ada@example.com"),
                })
                .execute(conn)
                .await?;
            Ok(())
        })
        .await;
    println!(
        "failing transaction: {}",
        failed.expect_err("a unique violation")
    );

    // Read.
    let names: Vec<String> = users::table.select(users::name).load(&mut conn).await?;
    println!("users: {names:?}");
    let adas_posts: Vec<Post> = Post::belonging_to(&ada)
        .select(Post::as_select())
        .load(&mut conn)
        .await?;
    let comment_count: i64 = comments::table
        .filter(comments::post_id.eq(post.id))
        .count()
        .get_result(&mut conn)
        .await?;
    println!(
        "ada has {} post(s); the first has {comment_count} comment(s)",
        adas_posts.len()
    );

    // Update.
    let published = diesel::update(posts::table.find(post.id))
        .set(posts::published.eq(true))
        .execute(&mut conn)
        .await?;
    println!("published {published} post(s)");

    // Delete (comments go with their post: ON DELETE CASCADE, foreign keys are on).
    diesel::delete(posts::table.find(post.id))
        .execute(&mut conn)
        .await?;
    let gone = posts::table
        .find(post.id)
        .select(Post::as_select())
        .first(&mut conn)
        .await
        .optional()?;
    let comments_left: i64 = comments::table.count().get_result(&mut conn).await?;
    println!(
        "post deleted: {}, comments left: {comments_left}",
        gone.is_none()
    );

    conn.database().close().await?;
    Ok(())
}
